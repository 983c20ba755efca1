# 35-tls.t - STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on the client side.
#
# A certificate made by the test, the proxy in front of smtp-sink; clients
# are swaks, openssl s_client and a raw socket upgraded with IO::Socket::SSL
# (for the command-injection case, CVE-2011-0411 class).
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Socket::SSL;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $dir = tmpdir();
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
    . "-subj /CN=proxy.test >/dev/null 2>&1") == 0 or die "openssl req failed\n";

my $sink = start_sink();
my $implicit = free_port();
my $proxy = start_proxy(<<"CONF");
listen = [ "127.0.0.1:${\ free_port() }", { address = "127.0.0.1:$implicit"; tls = "implicit"; } ];
backend = "127.0.0.1:${\ $sink->port }";
tls { cert = "$cert"; key = "$key"; protocols = "TLSv1.2:TLSv1.3"; }
timeout { shutdown = 5; }
CONF
my $port = $proxy->port;

# --- config checks
{
	my $bad = spew("$dir/badcert.conf", qq{listen = "127.0.0.1:1"; backend = "127.0.0.1:2";\n}
	    . qq{tls { cert = "$dir/missing.pem"; key = "$key"; }\n});
	my $out = `$ENV{SMTPCHAIN} -t -c $bad 2>&1`;
	is($? >> 8, 1, '-t: a missing certificate fails the check');
	like($out, qr/tls\.cert: \Q$dir\E\/missing\.pem/, '-t: naming tls.cert and the file');
	my $noblock = spew("$dir/notls.conf", qq{listen = { address = "127.0.0.1:1"; tls = "implicit"; };\n}
	    . qq{backend = "127.0.0.1:2";\n});
	$out = `$ENV{SMTPCHAIN} -t -c $noblock 2>&1`;
	is($? >> 8, 1, '-t: implicit TLS without tls {} fails');
	like($out, qr/notls\.conf:1: listen: .*needs a tls \{\} block/, '-t: saying so with file:line');
}

# --- STARTTLS offered, arguments refused
{
	my $c = smtp_connect($port);
	$c->read_reply;
	my @kw = ehlo_keywords($c->ehlo('client.test'));
	ok((grep { $_ eq 'STARTTLS' } @kw), 'EHLO offers STARTTLS when tls {} is set');
	reply_ok($c->cmd('STARTTLS now'), 501, '5.5.4', 'STARTTLS with an argument: 501 5.5.4');
	$c->close;
}

# --- swaks through STARTTLS
{
	my ($rc, $out) = swaks('--server', '127.0.0.1', '--port', $port, '--tls',
	    '--from', 'a@client.test', '--to', 'b@example.test', '--header', 'Subject: tls-starttls');
	is($rc, 0, 'swaks --tls: the message is accepted');
	like($out, qr/TLS started/, 'swaks: TLS started');
	ok(scalar $sink->wait_find(qr/tls-starttls/), 'swaks --tls: delivered to the backend');
	ok($proxy->wait_log(qr/ tls=TLSv1\.[23]\//), 'the summary line shows the TLS version');
	like($proxy->log_text, qr/tls=TLSv1\.[23]\/\S+ status=sent/, 'summary: tls=VERSION/CIPHER');
}

# --- implicit TLS (port 465 style)
{
	my ($rc, $out) = swaks('--server', '127.0.0.1', '--port', $implicit, '--tlsc',
	    '--from', 'a@client.test', '--to', 'b@example.test', '--header', 'Subject: tls-implicit');
	is($rc, 0, 'swaks --tlsc: implicit TLS accepted');
	ok(scalar $sink->wait_find(qr/tls-implicit/), 'implicit TLS: delivered');
}

# --- openssl s_client -starttls smtp: STARTTLS not offered again inside TLS
{
	my $out = `printf 'EHLO inside.test\\r\\nQUIT\\r\\n' | timeout 20 openssl s_client -starttls smtp -connect 127.0.0.1:$port -quiet -ign_eof 2>/dev/null`;
	like($out, qr/^250[- ]/m, 's_client: EHLO answered inside TLS');
	unlike($out, qr/STARTTLS/, 's_client: STARTTLS is not offered again after TLS');
	like($out, qr/^221 /m, 's_client: QUIT answered');
}

# --- command injection: what is pipelined after STARTTLS never runs inside TLS
{
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10) or die "connect: $!";
	my $read = sub {
		my $r = '';
		while (defined(my $l = $s->getline)) { $r .= $l; last if $l =~ /^\d{3} /; }
		return $r;
	};
	$read->();
	print $s "EHLO client.test\r\n";
	$read->();
	print $s "STARTTLS\r\nMAIL FROM:<injected\@evil.test>\r\n";
	like($read->(), qr/^220 2\.0\.0/, 'injection: 220 to STARTTLS');
	IO::Socket::SSL->start_SSL($s, SSL_verify_mode => SSL_VERIFY_NONE, Timeout => 10)
	    or die "start_SSL: $SSL_ERROR";
	print $s "MAIL FROM:<a\@client.test>\r\n";
	like($read->(), qr/^503 5\.5\.1 /, 'after TLS, MAIL before EHLO: 503 5.5.1');
	print $s "EHLO client.test\r\n";
	my $ehlo = $read->();
	like($ehlo, qr/^250 /m, 'EHLO again inside TLS');
	print $s "RCPT TO:<b\@example.test>\r\n";
	my $r = $read->();
	like($r, qr/^503 /, 'the injected MAIL never ran: RCPT has no transaction (503)');
	print $s "QUIT\r\n";
	$read->();
	close $s;
	unlike($sink->log_text, qr/injected/, 'the injected command never reached the backend');
	ok($proxy->wait_log(qr/discarding \d+ octets the client sent after STARTTLS/),
	    'the proxy logs the discarded bytes');
}

# --- a client that is not speaking TLS after STARTTLS: the session ends, others go on
{
	my $c = smtp_connect($port);
	$c->read_reply;
	$c->ehlo('client.test');
	reply_ok($c->cmd('STARTTLS'), 220, '2.0.0', 'garbage: 220 to STARTTLS');
	$c->send("EHLO this is not a TLS record\r\n");
	ok($c->wait_closed(10), 'plaintext after STARTTLS: the proxy closes the connection');
	$c->close;
	my ($rc) = swaks('--server', '127.0.0.1', '--port', $port, '--tls',
	    '--from', 'a@client.test', '--to', 'b@example.test', '--header', 'Subject: tls-after');
	is($rc, 0, 'another session still works');
}

$proxy->stop_ok('proxy exits 0 on SIGTERM');
done_testing();
