#!/bin/sh
# run.sh - start bench/bench.pl (the smtpchain benchmark) with enough file
# descriptors for the idle-connection workload.  "make bench" calls this;
# see bench/bench.pl for the options and environment.
#
#   bench/run.sh [--quick] [--out DIR]
#
# SMTPCHAIN (the daemon), SMTPCHAIN_SRCDIR and SMTPCHAIN_BUILDDIR are set by
# "make bench"; run by hand from a build tree they default to ./proxy/smtpchain
# and the source tree this script is in.
here=$(cd "$(dirname "$0")" && pwd)
: "${SMTPCHAIN_SRCDIR:=$(dirname "$here")}"
: "${SMTPCHAIN_BUILDDIR:=$(pwd)}"
: "${SMTPCHAIN:=$SMTPCHAIN_BUILDDIR/proxy/smtpchain}"
export SMTPCHAIN SMTPCHAIN_SRCDIR SMTPCHAIN_BUILDDIR
# 10,000 idle sessions: the client, the proxy and the sink each need a
# descriptor per connection (the proxy two).  Raise what we may, say so if not.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null ||
	echo "run.sh: cannot raise the open-files limit (now $(ulimit -n))" >&2
exec perl -I"$SMTPCHAIN_SRCDIR/t/lib" "$here/bench.pl" "$@"
