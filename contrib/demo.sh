#!/bin/bash
# contrib/demo.sh - the quick start.  On Debian 12, as root: install what is
# needed, build smtpchain, start a private Postfix (delivering to smtp-sink,
# which writes each message to a file) and the proxy in front of it, send
# one message through both with swaks, show the proxy's transcript and the
# delivered message, then stop everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

bash contrib/deps.sh
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
make -j2 >/dev/null
SMTPCHAIN="$top/proxy/smtpchain" SMTPCHAIN_SRCDIR="$top" SMTPCHAIN_BUILDDIR="$top" \
	exec perl -I"$top/t/lib" "$top/contrib/demo.pl"
