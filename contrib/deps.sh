#!/bin/bash
# contrib/deps.sh - install the Debian 12 packages smtpchain's build, tests
# and demo need (as root).  Used by .ci/run and contrib/demo.sh, so the
# list lives in one place.  Postfix is installed for smtp-sink/smtp-source
# and for private test instances; the system's own Postfix is left
# unconfigured and stopped.  It also creates the system account smtpchain
# (no login, no home) the workers run as.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "contrib/deps.sh: must run as root (it installs packages)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential autoconf automake libtool pkg-config \
	libuv1-dev libssl-dev libpcre2-dev libmilter-dev libcmocka-dev \
	postfix postfix-pcre swaks opendkim opendkim-tools haproxy rspamd \
	clamav-daemon clamav-milter clamav-testfiles spamassassin spamd spamc spamass-milter \
	opendmarc publicsuffix \
	clang libclang-rt-14-dev valgrind \
	perl libio-socket-ip-perl libio-socket-ssl-perl libnet-ssleay-perl libnet-dns-perl openssl \
	postgrey postfix-policyd-spf-python \
	procps iproute2 ca-certificates coreutils util-linux mount \
	>/dev/null
# The regex module's prefilter (configure finds libhs through pkg-config):
# Hyperscan on amd64, Vectorscan (its portable fork, same API) elsewhere.
case "$(dpkg --print-architecture)" in
amd64)	hs=libhyperscan-dev ;;
*)	hs=libvectorscan-dev ;;
esac
apt-get install -y -q --no-install-recommends "$hs" >/dev/null ||
	echo "contrib/deps.sh: $hs not installed: the regex rules run on PCRE2 alone" >&2
if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then
	postfix stop || true
fi
# The account the workers run as (smtpchain.conf(5), user), used by the
# quick start and t/89-privsep.t.  Once: a second run finds it.
if ! getent passwd smtpchain >/dev/null; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin smtpchain
fi
