# 82-limits.t - connection limits: in all (limits.max_connections) and per
# client address (limits.max_connections_per_client), both answered with
# 421 4.7.0 and a close, with a log line; after a PROXY header the limit is
# on the real client's address.
#
# Clients bind distinct loopback addresses (127.0.0.20 and up) so that each
# is a client of its own.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $sink = start_sink(verbose => 0);
my $bport = $sink->port;
my $H = 'proxy.test';

# A connection from an address that got the backend's greeting.
sub greeted {
	my ($port, $from) = @_;
	my $c = smtp_connect($port, local_addr => $from) or BAIL_OUT("connect from $from: $@");
	my $g = $c->read_reply;
	return ($c, $g);
}

# Retry (bounded) until a connection from $from is greeted: the proxy sees
# the closes of other connections asynchronously.
sub greeted_eventually {
	my ($port, $from) = @_;
	my ($c, $g);
	wait_until(sub {
		($c, $g) = greeted($port, $from);
		return 1 if ($g->{code} // 0) == 220;
		$c->close;
		return 0;
	}, 10, 0.2);
	return ($c, $g);
}

{
	my $p = start_proxy(<<"EOF", name => 'limits');
backend = "127.0.0.1:$bport";
limits { max_connections = 4; max_connections_per_client = 2; }
timeout { shutdown = 5; }
EOF
	my $port = $p->port;
	my @a = map { my ($c, $g) = greeted($port, '127.0.0.20'); reply_ok($g, 220, undef, "127.0.0.20 #$_: greeted"); $c } 1 .. 2;
	my ($x, $r) = greeted($port, '127.0.0.20');
	is($r->{raw}, "421 4.7.0 $H Error: too many connections from 127.0.0.20\r\n",
	    'a third from the same address: 421 4.7.0');
	ok($x->wait_closed(10), 'and it is closed');
	like($p->wait_log(qr/(too many connections from \[127\.0\.0\.20\][^\n]*)/) // '',
	    qr/\(2, limits\.max_connections_per_client\)/, 'logged with the count and the limit');

	my @b = map { my ($c, $g) = greeted($port, '127.0.0.21'); reply_ok($g, 220, undef, "127.0.0.21 #$_: greeted (its own count)"); $c } 1 .. 2;
	my ($y, $r2) = greeted($port, '127.0.0.22');
	is($r2->{raw}, "421 4.7.0 $H Error: too many connections\r\n",
	    'a fifth in all, from a new address: 421 4.7.0 (the total)');
	ok($y->wait_closed(10), 'and it is closed');
	like($p->wait_log(qr/(too many connections \(\d+, limits\.max_connections\))/) // '',
	    qr/\(4, /, 'logged with the total');

	# One of 127.0.0.20's sessions ends: it has room again.
	reply_ok($a[0]->quit, 221, undef, '127.0.0.20 #1 quits');
	my ($z, $r3) = greeted_eventually($port, '127.0.0.20');
	reply_ok($r3, 220, undef, 'then 127.0.0.20 is greeted again');
	reply_ok($z->ehlo, 250, undef, 'and served');
	my ($w, $r4) = greeted($port, '127.0.0.23');
	reply_ok($r4, 421, '4.7.0', 'the total is still full');
	$_->quit for $z, $a[1], @b;
	my ($v, $r5) = greeted_eventually($port, '127.0.0.23');
	reply_ok($r5, 220, undef, 'once all quit, a new client is greeted');
	$v->quit;
	is($p->stop, 0, 'proxy exits 0');
}

# max_connections_per_client = 0: no per-client limit.
{
	my $p = start_proxy(<<"EOF", name => 'nolimit');
backend = "127.0.0.1:$bport";
limits { max_connections_per_client = 0; }
timeout { shutdown = 5; }
EOF
	my @c = map { my ($c, $g) = greeted($p->port, '127.0.0.24'); $c->{g} = $g; $c } 1 .. 60;
	is(scalar(grep { ($_->{g}{code} // 0) == 220 } @c), 60, 'per-client limit 0: 60 from one address are all greeted');
	$_->quit for @c;
	is($p->stop, 0, 'proxy exits 0');
}

# Default (50): the 51st from one address is refused.
{
	my $p = start_proxy(<<"EOF", name => 'default');
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
EOF
	my @c = map { my ($c, $g) = greeted($p->port, '127.0.0.25'); $c->{g} = $g; $c } 1 .. 51;
	is(scalar(grep { ($_->{g}{code} // 0) == 220 } @c[0 .. 49]), 50, 'default: 50 from one address are greeted');
	is($c[50]{g}{raw}, "421 4.7.0 $H Error: too many connections from 127.0.0.25\r\n", 'the 51st gets 421 4.7.0');
	$_->quit for @c[0 .. 49];
	is($p->stop, 0, 'proxy exits 0');
}

# Behind a load balancer: the limit is on the address in the PROXY header.
{
	my $pp = SmtpChainTest::free_port();
	my $p = start_proxy(<<"EOF", name => 'proxied');
listen = [ "127.0.0.1:@{[SmtpChainTest::free_port()]}", { address = "127.0.0.1:$pp"; proxy_protocol = true; } ];
backend = "127.0.0.1:$bport";
limits { max_connections_per_client = 2; }
timeout { shutdown = 5; }
EOF
	wait_until(sub { SmtpChainTest::port_listening($pp) }, 10);
	my $hdr = sub { "PROXY TCP4 $_[0] 127.0.0.1 " . (40000 + $_[1]) . " 25\r\n" };
	my @c;
	for my $i (1 .. 2) {
		my $c = smtp_connect($pp, local_addr => '127.0.0.30') or BAIL_OUT("connect: $@");
		$c->send($hdr->('127.0.0.77', $i));
		reply_ok($c->read_reply, 220, undef, "real client 127.0.0.77 #$i via the balancer: greeted");
		push @c, $c;
	}
	my $x = smtp_connect($pp, local_addr => '127.0.0.30') or BAIL_OUT("connect: $@");
	$x->send($hdr->('127.0.0.77', 3));
	is($x->read_reply->{raw}, "421 4.7.0 $H Error: too many connections from 127.0.0.77\r\n",
	    'a third from 127.0.0.77 through the same balancer: 421 for the real address');
	my $y = smtp_connect($pp, local_addr => '127.0.0.30') or BAIL_OUT("connect: $@");
	$y->send($hdr->('127.0.0.78', 1));
	reply_ok($y->read_reply, 220, undef, 'another real client through the same balancer is greeted');
	$_->quit for @c, $y;
	is($p->stop, 0, 'proxy exits 0');
}

done_testing();
