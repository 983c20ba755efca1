# 80-proxy-protocol.t - PROXY protocol v1 and v2 on a listener, with a real
# HAProxy in front.
#
# The chain: client (bound to 127.0.0.7) -> HAProxy (mode tcp, send-proxy-v2
# on one frontend, send-proxy on another) -> the proxy's proxy_protocol
# listener -> a private Postfix that takes XCLIENT -> smtp-sink.  Every hop
# is on loopback, so the client binds 127.0.0.7: the real address then
# differs from HAProxy's 127.0.0.1, and Postfix's Received header, its
# maillog and the proxy's summary line must all show 127.0.0.7 and the
# client's own port.  Then headers sent by hand: bad ones and none (closed
# with no reply: the peer is a load balancer), LOCAL, and a v1 header with
# the client's first command in the same packet.  Last, swaks with implicit
# TLS through HAProxy (send-proxy-v2) to a listener with tls = "implicit" and
# proxy_protocol: the header comes before the handshake, and a milter's
# {client_addr} macro is the real client.  And the destination: HAProxy
# bound on 127.0.0.3 (send-proxy-v2) in front of a proxy with a test filter
# module, whose daemon_addr must be 127.0.0.3, the header's destination,
# not the proxy's own 127.0.0.1 (the milter macro {daemon_addr} is the same
# value).
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;
my $haproxy = SmtpChainTest::find_program('haproxy');
plan skip_all => 'haproxy is not installed (contrib/deps.sh)' unless $haproxy;

my $dir = tmpdir();
my $sink = start_sink(name => 'delivered');
my $pf = start_postfix(relay_port => $sink->port, main => "smtpd_client_port_logging = yes\n");
my $bport = $pf->port;

my ($plain, $pp) = (SmtpChainTest::free_port(), SmtpChainTest::free_port());
my $proxy = start_proxy(<<"EOF");
listen = [ "127.0.0.1:$plain", { address = "127.0.0.1:$pp"; proxy_protocol = true; } ];
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; proxy_protocol = 2; }
EOF
ok(SmtpChainTest::wait_until(sub { SmtpChainTest::port_listening($pp) }, 10),
    'the proxy_protocol listener is up');

# HAProxy in the foreground (-db), stopped by its pid.  A third frontend
# goes to the implicit TLS listener of a second proxy, started further down.
my ($h2, $h1, $h3) = (SmtpChainTest::free_port(), SmtpChainTest::free_port(), SmtpChainTest::free_port());
my ($ppt, $h4, $ppd) = (SmtpChainTest::free_port(), SmtpChainTest::free_port(), SmtpChainTest::free_port());
my $hcfg = spew("$dir/haproxy.cfg", <<"EOF");
global
	maxconn 100
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
listen smtp_v2
	bind 127.0.0.1:$h2
	server smtpchain 127.0.0.1:$pp send-proxy-v2
listen smtp_v1
	bind 127.0.0.1:$h1
	server smtpchain 127.0.0.1:$pp send-proxy
listen smtps_v2
	bind 127.0.0.1:$h3
	server smtpchain 127.0.0.1:$ppt send-proxy-v2
listen smtp_dst
	bind 127.0.0.3:$h4
	server smtpchain 127.0.0.1:$ppd send-proxy-v2
EOF
my $hpid = SmtpChainTest::spawn(argv => [$haproxy, '-db', '-f', $hcfg], output => "$dir/haproxy.log");
SmtpChainTest::on_cleanup("haproxy $hpid", sub { SmtpChainTest::stop_pid($hpid, 'TERM', 10) });
ok(SmtpChainTest::wait_until(sub {
	(SmtpChainTest::port_listening($h2) && SmtpChainTest::port_listening($h1)) || !proc_alive($hpid)
}, 15) && proc_alive($hpid), 'HAProxy is up') or BAIL_OUT('haproxy: ' . (slurp("$dir/haproxy.log") // ''));

# One message through HAProxy from 127.0.0.7; returns [client port, queue id].
sub through_haproxy {
	my ($hport, $tag) = @_;
	my $c = smtp_connect($hport, local_addr => '127.0.0.7')
	    or BAIL_OUT("cannot connect to HAProxy from 127.0.0.7: $@");
	my $cport = $c->local_port;
	reply_ok($c->read_reply, 220, undef, "$tag: Postfix's greeting through HAProxy and the proxy");
	reply_ok($c->ehlo('client.test'), 250, undef, "$tag: EHLO");
	my $msg = make_message(from => "$tag\@client.test", to => 'rcpt@example.test',
	    subject => "via $tag");
	my $r = $c->send_mail(from => "$tag\@client.test", to => ['rcpt@example.test'], data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', "$tag: the message is queued");
	my ($qid) = ($r->{end}{text} // '') =~ /queued as ([0-9A-F]+)/;
	reply_ok($c->quit, 221, undef, "$tag: QUIT");
	return ($cport, $qid);
}

for my $case ([$h2, 'v2'], [$h1, 'v1']) {
	my ($hport, $tag) = @$case;
	my ($cport, $qid) = through_haproxy($hport, $tag);

	my ($m) = $sink->wait_find(qr/^Subject: via \Q$tag\E$/m, 30);
	my $trace = $m && $m->{message} =~ /\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)/ ? $1 : '';
	like($trace, qr/\[127\.0\.0\.7\]/, "$tag: Postfix's Received header names the real client 127.0.0.7 (XCLIENT)")
	    or diag($trace);
	unlike($trace, qr/\[127\.0\.0\.1\]/, "$tag: not HAProxy's or the proxy's 127.0.0.1");
	my $ml = $qid ? $pf->wait_maillog(qr/(\Q$qid\E: client=[^\n]*)/) : undef;
	like($ml // '', qr/client=[^\s\[]*\[127\.0\.0\.7\]:\Q$cport\E\b/,
	    "$tag: Postfix's maillog shows the real client and its port (XCLIENT ADDR and PORT)")
	    or diag($pf->maillog);
	my $cl = $proxy->wait_log(qr/(connect from \[127\.0\.0\.7\]:\Q$cport\E via [^\n]*)/);
	like($cl // '', qr/via \[127\.0\.0\.1\]:\d+/, "$tag: the proxy logs the real client and the load balancer")
	    or diag($proxy->log_tail);
	my $sl = $proxy->wait_log(qr/(client=\[127\.0\.0\.7\]:\Q$cport\E [^\n]*from=<\Q$tag\E\@client\.test>[^\n]*)/);
	ok($sl, "$tag: the summary line shows the real client and port") or diag($proxy->log_tail);
}

# A plain listener next to it is unchanged: no header expected.
{
	my @r = smtp_session($plain, ['EHLO plain.test', 'QUIT'], local_addr => '127.0.0.8');
	reply_ok($r[0], 220, undef, 'the plain listener greets at once');
	reply_ok($r[1], 250, undef, 'and takes EHLO');
	ok($proxy->wait_log(qr/(connect from \[127\.0\.0\.8\]:\d+\n)/), 'logged with the peer address, no "via"');
}

# Bad headers: the connection is closed, nothing is sent, a line is logged.
my @bad = (
	['not a header', "EHLO client.test\r\n", qr/no PROXY protocol signature/],
	['v1 with a bad address', "PROXY TCP4 127.0.0.300 127.0.0.1 1234 25\r\n", qr/v1: bad address/],
	['v1 over 107 bytes', 'PROXY UNKNOWN ' . ('x' x 120), qr/v1: line too long/],
	['v2 UDP', "\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c" . ("\0" x 12), qr/v2: not TCP/],
	['v2 longer than the bound', "\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff", qr/v2: header too long/],
);
for my $b (@bad) {
	my ($name, $bytes, $why) = @$b;
	my $c = smtp_connect($pp, local_addr => '127.0.0.9') or BAIL_OUT("connect: $@");
	$c->send($bytes);
	ok($c->wait_closed(10), "$name: the connection is closed");
	is($c->{transcript}, '', "$name: with no reply");
	ok($proxy->wait_log(qr/(PROXY protocol: bad header from \[127\.0\.0\.9\]:\d+: [^\n]*)/)
	    =~ $why, "$name: the log says why") or diag($proxy->log_tail);
	$c->close;
}

# No header at all: closed after timeout.proxy_protocol, no reply.
{
	my $c = smtp_connect($pp, local_addr => '127.0.0.10') or BAIL_OUT("connect: $@");
	$c->send("PROXY TCP4 ");	# a prefix, then nothing
	ok($c->wait_closed(30), 'a header that never completes: the connection is closed');
	is($c->{transcript}, '', 'with no reply');
	like($proxy->wait_log(qr/(PROXY protocol: no header from \[127\.0\.0\.10\][^\n]*)/) // '',
	    qr/in 2s/, 'logged after timeout.proxy_protocol');
}

# A header dripped one byte at a time: timeout.proxy_protocol (2 s) runs
# from accept, so the connection is cut before the header is whole, however
# steadily the bytes come.  The header is 100 bytes (v1 allows 107), one
# byte every quarter of a second: 25 s, far past the deadline.  Before the
# fix every byte restarted the timer and the header went through.
{
	my $hdr = 'PROXY UNKNOWN ' . ('x' x 84) . "\r\n";
	my $c = smtp_connect($pp, local_addr => '127.0.0.19') or BAIL_OUT("connect: $@");
	my ($sent, $closed) = (0, 0);
	for my $byte (split //, $hdr) {
		last unless $c->send($byte);
		$sent++;
		last if ($closed = $c->wait_closed(0.25));
	}
	$closed ||= $c->wait_closed(30);
	ok($closed, 'a header dripped a byte at a time: the connection is closed');
	cmp_ok($sent, '<', length $hdr, 'before the header was whole') or diag("sent $sent bytes");
	is($c->{transcript}, '', 'with no reply');
	like($proxy->wait_log(qr/(PROXY protocol: no header from \[127\.0\.0\.19\][^\n]*)/) // '',
	    qr/in 2s \(\d+ bytes\)/, 'logged as a header not whole by timeout.proxy_protocol')
	    or diag($proxy->log_tail);
	unlike($proxy->log_text, qr/connect from [^\n]* via \[127\.0\.0\.19\]/, 'no session began');
	$c->close;
}

# LOCAL (HAProxy's own health check): the connection's own address stands.
{
	my $c = smtp_connect($pp, local_addr => '127.0.0.11') or BAIL_OUT("connect: $@");
	$c->send("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
	reply_ok($c->read_reply, 220, undef, 'v2 LOCAL: the greeting');
	reply_ok($c->quit, 221, undef, 'v2 LOCAL: QUIT');
	ok($proxy->wait_log(qr/(PROXY protocol v2: LOCAL from \[127\.0\.0\.11\][^\n]*)/), 'v2 LOCAL is logged');
	ok($proxy->wait_log(qr/(connect from \[127\.0\.0\.11\]:\d+ via \[127\.0\.0\.11\][^\n]*)/),
	    'and the peer address is the client');
}

# A v1 header with the client's EHLO in the same packet (an early talker):
# the EHLO is kept and answered after the greeting; XCLIENT names the
# header's client.
{
	my $c = smtp_connect($pp, local_addr => '127.0.0.12') or BAIL_OUT("connect: $@");
	$c->send("PROXY TCP4 127.0.0.55 127.0.0.1 4242 25\r\nEHLO early.test\r\n");
	reply_ok($c->read_reply, 220, undef, 'header and EHLO in one packet: the greeting');
	reply_ok($c->read_reply, 250, undef, 'then the EHLO reply');
	my $msg = make_message(from => 'early@client.test', to => 'rcpt@example.test', subject => 'early');
	my $r = $c->send_mail(from => 'early@client.test', to => ['rcpt@example.test'], data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', 'and a message');
	reply_ok($c->quit, 221, undef, 'QUIT');
	my ($m) = $sink->wait_find(qr/^Subject: early$/m, 30);
	like($m ? $m->{message} : '', qr/^Received: from early\.test \(unknown \[127\.0\.0\.55\]\)/m,
	    'Postfix names the header\'s client 127.0.0.55, not the peer 127.0.0.12')
	    or diag($m ? $m->{message} : 'no message');
	ok($proxy->wait_log(qr/(client=\[127\.0\.0\.55\]:4242 [^\n]*from=<early\@client\.test>[^\n]*)/),
	    'the summary line shows the header\'s client and port') or diag($proxy->log_tail);
}

# Implicit TLS behind HAProxy: the PROXY header comes before the TLS
# handshake.  A milter (t/milter/testmilter) sees the real client in its
# {client_addr} macro.
{
	my $build = $ENV{SMTPCHAIN_BUILDDIR} // '';
	my $module = "$build/filters/milter/.libs/milter.so";
	my $testmilter = "$build/t/milter/testmilter";
	my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
	system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
	    . "-subj /CN=proxy.test >/dev/null 2>&1") == 0 or die "openssl req failed\n";
	my $filter = '';
	my $mport = SmtpChainTest::free_port();
	if (-f $module && -x $testmilter) {
		my $mpid = SmtpChainTest::spawn(argv => [$testmilter, '-p', "inet:$mport\@127.0.0.1",
		    '-n', 'pp'], output => "$dir/milter.log");
		SmtpChainTest::on_cleanup("testmilter $mpid", sub { SmtpChainTest::stop_pid($mpid, 'KILL', 5) });
		wait_until(sub { SmtpChainTest::port_listening($mport) || !proc_alive($mpid) }, 10);
		$filter = qq{filter {\n\tmodule = "$module";\n\tsocket = "inet:127.0.0.1:$mport";\n}\n};
	}
	my $tp = start_proxy(<<"EOF", name => 'tls');
listen = [ "127.0.0.1:@{[SmtpChainTest::free_port()]}", { address = "127.0.0.1:$ppt"; tls = "implicit"; proxy_protocol = true; } ];
backend = "127.0.0.1:$bport";
tls { cert = "$cert"; key = "$key"; }
timeout { shutdown = 5; }
$filter
EOF
	wait_until(sub { SmtpChainTest::port_listening($ppt) }, 10);
	my ($rc, $out) = swaks('--server', '127.0.0.1', '--port', $h3, '--tlsc',
	    '--local-interface', '127.0.0.14', '--ehlo', 'tls.client.test',
	    '--from', 'tls@client.test', '--to', 'rcpt@example.test', '--header', 'Subject: via tls-pp');
	is($rc, 0, 'swaks --tlsc through HAProxy send-proxy-v2: implicit TLS after the PROXY header')
	    or diag($out);
	my ($m) = $sink->wait_find(qr/^Subject: via tls-pp$/m, 30);
	like($m ? $m->{message} : '', qr/^Received: from tls\.client\.test \(unknown \[127\.0\.0\.14\]\)/m,
	    'Postfix names the real client 127.0.0.14 (XCLIENT)') or diag($m ? $m->{message} : 'none');
	ok($tp->wait_log(qr/(connect from \[127\.0\.0\.14\]:\d+ via \[127\.0\.0\.1\][^\n]*)/),
	    'the proxy logs the real client');
	ok($tp->wait_log(qr/(TLS established[^\n]*)/), 'and TLS');
	SKIP: {
		skip 'the milter module or testmilter is not built', 1 unless $filter;
		like($m ? $m->{message} : '', qr/^X-Testmilter-pp: [^\n]*\bclient_addr=127\.0\.0\.14\b/m,
		    'the milter\'s {client_addr} macro is the real client');
	}
	# The header and the first TLS bytes in one packet: what follows the
	# header goes to TLS (a bad record here), never read as SMTP.
	{
		my $c = smtp_connect($ppt, local_addr => '127.0.0.15') or BAIL_OUT("connect: $@");
		$c->send("PROXY TCP4 127.0.0.88 127.0.0.1 5555 465\r\n\x16\x03\x01\x00\x05EHLO\n");
		ok($c->wait_closed(10), 'header + a bad TLS record in one packet: closed');
		unlike($c->{transcript}, qr/^\d{3}[ -]/m, 'with no plaintext SMTP reply');
		ok($tp->wait_log(qr/(connect from \[127\.0\.0\.88\]:5555 via \[127\.0\.0\.15\]:\d+)/),
		    'the header was taken');
		like($tp->wait_log(qr/((?:connect from \[127\.0\.0\.88\][^\n]*\n)(?:[^\n]*\n)*?[^\n]*TLS: [^\n]*)/) // '',
		    qr/TLS: /, 'and the bytes after it went to TLS, which refused them');
	}
	is($tp->stop, 0, 'the TLS proxy exits 0');
}

# The address the client connected to: the header's destination, as a
# filter sees it (host->get("daemon_addr"), the value of the milter macro).
SKIP: {
	my $tf = ($ENV{SMTPCHAIN_BUILDDIR} // '') . '/t/modules/.libs/testfilter.so';
	skip 'the test filter module is not built', 11 unless -f $tf;
	my $dp = start_proxy(<<"EOF", name => 'dst');
listen = [ "127.0.0.1:@{[SmtpChainTest::free_port()]}", { address = "127.0.0.1:$ppd"; proxy_protocol = true; } ];
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
filter { module = "$tf"; tag = "dst"; trace_get = [ "daemon_addr", "client_addr" ]; }
EOF
	ok(wait_until(sub { SmtpChainTest::port_listening($ppd) }, 10), 'the proxy with the test filter is up');
	# A message on an open connection, then QUIT; what the filter got.
	my $mail = sub {
		my ($c, $subject) = @_;
		reply_ok($c->ehlo('dst.client.test'), 250, undef, "$subject: EHLO");
		my $msg = make_message(from => 'dst@client.test', to => 'rcpt@example.test', subject => $subject);
		my $r = $c->send_mail(from => 'dst@client.test', to => ['rcpt@example.test'], data => $msg);
		$c->quit;
		$c->close;
		my ($m) = $sink->wait_find(qr/^Subject: \Q$subject\E$/m, 30);
		return $m && $m->{message} =~ /^X-Testfilter-dst-Get:([^\n]*)/m ? $1 : '';
	};

	my $c = smtp_connect($h4, host => '127.0.0.3', local_addr => '127.0.0.16')
	    or BAIL_OUT("cannot connect to HAProxy on 127.0.0.3: $@");
	reply_ok($c->read_reply, 220, undef, 'HAProxy on 127.0.0.3: the greeting');
	is($mail->($c, 'dst via haproxy'), ' daemon_addr=127.0.0.3 client_addr=127.0.0.16',
	    'send-proxy-v2: daemon_addr is the destination in the header (HAProxy\'s 127.0.0.3), '
	    . 'not the proxy\'s 127.0.0.1');

	$c = smtp_connect($ppd, local_addr => '127.0.0.17') or BAIL_OUT("connect: $@");
	$c->send("PROXY TCP4 127.0.0.57 192.0.2.25 4343 25\r\n");
	reply_ok($c->read_reply, 220, undef, 'a v1 header by hand: the greeting');
	is($mail->($c, 'dst v1'), ' daemon_addr=192.0.2.25 client_addr=127.0.0.57',
	    'v1: daemon_addr is the header\'s destination');

	$c = smtp_connect($ppd, local_addr => '127.0.0.18') or BAIL_OUT("connect: $@");
	$c->send("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
	reply_ok($c->read_reply, 220, undef, 'v2 LOCAL: the greeting');
	is($mail->($c, 'dst local'), ' daemon_addr=127.0.0.1 client_addr=127.0.0.18',
	    'v2 LOCAL: the connection\'s own addresses stand');
	is($dp->stop, 0, 'the proxy with the test filter exits 0');
}

# Connections waiting for their header count toward limits.max_connections
# (not per client: they all come from the balancer's address).  20 of them
# on a listener with max_connections = 5: 5 wait, the other 15 get what a
# sixth client gets on any listener, 421 and a close; so does a client on
# the plain listener beside it.  When the waiting ones go, there is room.
{
	my ($lp, $lpp) = (SmtpChainTest::free_port(), SmtpChainTest::free_port());
	my $lim = start_proxy(<<"EOF", name => 'limit');
listen = [ "127.0.0.1:$lp", { address = "127.0.0.1:$lpp"; proxy_protocol = true; } ];
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; proxy_protocol = 300; }
limits { max_connections = 5; max_connections_per_client = 0; }
EOF
	ok(wait_until(sub { SmtpChainTest::port_listening($lpp) }, 10), 'the proxy with max_connections = 5 is up');
	my @c;
	for my $i (1 .. 20) {
		my $c = smtp_connect($lpp, local_addr => '127.0.0.20') or BAIL_OUT("connect $i: $@");
		$c->send('PROXY ');	# a prefix, then nothing
		push @c, $c;
	}
	my $refused = sub { scalar(() = $lim->log_text =~ /too many connections \(\d+, limits\.max_connections\)/g) };
	ok(wait_until(sub { $refused->() >= 15 }, 30), '15 of the 20 waiting connections are over the limit')
	    or diag($lim->log_tail);
	# The refused ones are closed (the log line comes before the write):
	# wait for each close, the five that wait for their header aside.
	my (@waiting, @closed);
	for my $c (@c) {
		if ($c->wait_closed(0.2)) { push @closed, $c } else { push @waiting, $c }
	}
	while (@closed < 15 && @waiting) {
		my $late = grep { $_->wait_closed(2) } @waiting;
		push @closed, grep { $_->{eof} } @waiting;
		@waiting = grep { !$_->{eof} } @waiting;
		last unless $late;
	}
	is(scalar @closed, 15, '15 are closed');
	is(scalar @waiting, 5, '5 still wait for their header');
	is(scalar(grep { $_->{transcript} =~ /\A421 4\.7\.0 \S+ Error: too many connections\r\n\z/ } @closed), 15,
	    'each closed one got "421 4.7.0 too many connections", as a sixth client does')
	    or diag(join '', map { "[$_->{transcript}]\n" } @closed);
	is(join('', map { $_->{transcript} } @waiting), '', 'the waiting ones got nothing');
	my @r = smtp_session($lp, ['EHLO plain.test'], local_addr => '127.0.0.21');
	reply_ok($r[0], 421, '4.7.0', 'a client on the plain listener beside them: 421 too');
	$_->close for @waiting;
	ok(wait_until(sub {
		scalar(() = $lim->log_text =~ /PROXY protocol: \[127\.0\.0\.20\]:\d+ closed the connection/g) >= 5
	}, 30), 'the waiting ones are gone') or diag($lim->log_tail);
	my $c = smtp_connect($lpp, local_addr => '127.0.0.22') or BAIL_OUT("connect: $@");
	$c->send("PROXY TCP4 127.0.0.58 127.0.0.1 4444 25\r\n");
	reply_ok($c->read_reply, 220, undef, 'then a header is taken and the session begins');
	reply_ok($c->quit, 221, undef, 'QUIT');
	is($lim->stop, 0, 'the proxy with max_connections = 5 exits 0');
}

ok(proc_alive($hpid), 'HAProxy is still running');
is(SmtpChainTest::stop_pid($hpid, 'TERM', 10) >> 8, 0, 'HAProxy stopped');
is($proxy->stop, 0, 'the proxy exits 0');
done_testing();
