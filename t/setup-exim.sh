#!/bin/sh
# setup-exim.sh - unpack Debian's Exim next to the system Postfix, for the
# integration tests (t/25-exim.t).
#
# Postfix and Exim conflict as Debian packages, so Exim is not installed:
# its packages are downloaded and unpacked into a fixed directory, a
# Debian-exim system user is created (the binary is compiled with that user),
# and /usr/sbin/exim4 points at the unpacked binary because Exim re-executes
# itself by that path for deliveries.  Run as root; safe to run again.
#
# Usage: t/setup-exim.sh [DIR]        (default /opt/exim-test)
set -eu

dir=${1:-/opt/exim-test}

if [ "$(id -u)" != 0 ]; then
	echo "setup-exim.sh: must run as root" >&2
	exit 1
fi

# Exim's own shared libraries that Postfix does not pull in.
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	libidn12 libgnutls-dane0 libgnutls30 libnsl2 libdb5.3 libpcre2-8-0 >/dev/null

if [ ! -x "$dir/usr/sbin/exim4" ]; then
	dl=$(mktemp -d)
	trap 'rm -rf "$dl"' EXIT
	# apt-get download writes to the current directory; _apt must be able to.
	chmod 755 "$dl"
	(cd "$dl" && apt-get -o APT::Sandbox::User=root download exim4-daemon-light exim4-base exim4-config >/dev/null)
	mkdir -p "$dir"
	for deb in "$dl"/*.deb; do
		dpkg -x "$deb" "$dir"
	done
fi

getent group Debian-exim >/dev/null || groupadd --system Debian-exim
getent passwd Debian-exim >/dev/null || useradd --system -g Debian-exim \
	-d /nonexistent -s /usr/sbin/nologin Debian-exim

# Exim re-executes itself as /usr/sbin/exim4 (compiled in).
if [ ! -e /usr/sbin/exim4 ] || [ -L /usr/sbin/exim4 ]; then
	ln -sf "$dir/usr/sbin/exim4" /usr/sbin/exim4
fi

"$dir/usr/sbin/exim4" -bV -C /dev/null | head -1
