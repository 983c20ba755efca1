# 83-ipv6-prefix.t - IPv6 clients are counted by network for
# limits.max_connections_per_client: limits.client_ipv6_prefix_length
# (default 84, as Postfix's smtpd_client_ipv6_prefix_length), so one host
# with a /64 cannot take every connection by changing its address.
#
# The test runs in a network namespace of its own (unshare -n, then lo up
# with documentation addresses from 2001:db8::/32 added to it): clients
# bind those addresses and reach the proxy on [::1]; nothing leaves the
# namespace, and the host's interfaces are not touched.
use strict;
use warnings;

BEGIN {
	# Into a network namespace of our own, once: the same script again.
	# (A container without CAP_SYS_ADMIN cannot: the test is skipped.)
	if (!$ENV{SMTPCHAIN_T83_NETNS} && $ENV{SMTPCHAIN} && $> == 0 && -x '/usr/bin/unshare' &&
	    system('/usr/bin/unshare -n true >/dev/null 2>&1') == 0) {
		$ENV{SMTPCHAIN_T83_NETNS} = 1;
		my @inc = map { ('-I', $_) } grep { !ref } @INC;
		exec('/usr/bin/unshare', '-n', '--', $^X, @inc, $0, @ARGV);
		die "exec unshare: $!\n";
	}
}

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a network namespace of its own needs root and unshare(1)' unless $ENV{SMTPCHAIN_T83_NETNS};

# Our namespace: lo up, the addresses on it (nodad: usable at once).
my @addrs = qw(2001:db8::1 2001:db8::2 2001:db8::fff:0:3 2001:db8::1000:0:4);
system('ip', 'link', 'set', 'lo', 'up') == 0 or BAIL_OUT('ip link set lo up failed');
for my $a (@addrs) {
	system('ip', '-6', 'addr', 'add', "$a/128", 'dev', 'lo', 'nodad') == 0
	    or BAIL_OUT("ip -6 addr add $a failed");
}
ok(1, 'a network namespace of its own, with ' . scalar(@addrs) . ' IPv6 addresses on lo');

my $sink = start_sink(verbose => 0);
my $bport = $sink->port;

# A proxy on [::1] with max_connections_per_client = 2 and the given extra
# limits.
sub proxy_with {
	my ($name, $extra) = @_;
	my $port = SmtpChainTest::free_port('::1');
	my $p = start_proxy(<<"EOF", name => $name);
listen = "[::1]:$port";
backend = "127.0.0.1:$bport";
hostname = "proxy.test";
limits { max_connections_per_client = 2; $extra }
EOF
	return ($p, $port);
}
# What a client from an address gets: (its first reply, the connection).
sub from {
	my ($port, $addr) = @_;
	my $c = smtp_connect($port, host => '::1', local_addr => $addr) or BAIL_OUT("connect from $addr: $@");
	return ($c->read_reply, $c);
}

# The default, 84: 2001:db8::1, ::2 and ::fff:0:0:3 are one /84 (their first
# 84 bits agree), 2001:db8::1000:0:4 another (same /64, another /84).
{
	my ($p, $port) = proxy_with('default', '');
	my ($r1, $c1) = from($port, '2001:db8::1');
	my ($r2, $c2) = from($port, '2001:db8::2');
	reply_ok($r1, 220, undef, '84: 2001:db8::1 is greeted');
	reply_ok($r2, 220, undef, '84: 2001:db8::2, the same /84, is greeted (2 of 2)');
	my ($r3, $c3) = from($port, '2001:db8::fff:0:3');
	reply_ok($r3, 421, '4.7.0', '84: 2001:db8::fff:0:3, the same /84, is the third: 421');
	like($r3->{text} // '', qr/too many connections from 2001:db8::fff:0:3\b/, 'naming the client');
	like($p->wait_log(qr/(too many connections from \[2001:db8::fff:0:3\][^\n]*)/) // '',
	    qr/\(2 in 2001:db8::\/84, limits\.max_connections_per_client\)/, 'the log names the network counted')
	    or diag($p->log_tail);
	my ($r4, $c4) = from($port, '2001:db8::1000:0:4');
	reply_ok($r4, 220, undef, '84: 2001:db8::1000:0:4, another /84 in the same /64, is greeted');
	$_->close for $c1, $c2, $c3, $c4;
	$p->stop_ok('default: the proxy exits 0');
}

# 128: every address on its own, as before the key existed.
{
	my ($p, $port) = proxy_with('per-address', 'client_ipv6_prefix_length = 128;');
	my @c;
	for my $a (@addrs[0 .. 2]) {
		my ($r, $c) = from($port, $a);
		reply_ok($r, 220, undef, "128: $a is greeted");
		push @c, $c;
	}
	$_->close for @c;
	$p->stop_ok('per-address: the proxy exits 0');
}

# 64: all four are one client.
{
	my ($p, $port) = proxy_with('per-64', 'client_ipv6_prefix_length = 64;');
	my ($r1, $c1) = from($port, '2001:db8::1');
	my ($r2, $c2) = from($port, '2001:db8::fff:0:3');
	my ($r3, $c3) = from($port, '2001:db8::1000:0:4');
	reply_ok($r1, 220, undef, '64: the first is greeted');
	reply_ok($r2, 220, undef, '64: the second too');
	reply_ok($r3, 421, '4.7.0', '64: 2001:db8::1000:0:4 is the third from 2001:db8::/64: 421');
	$_->close for $c1, $c2, $c3;
	$p->stop_ok('per-64: the proxy exits 0');
}

done_testing;
