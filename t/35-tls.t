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

# --- session resumption: a session from one connection is reused by the next
for my $v ([ 'TLSv1.3', '-tls1_3' ], [ 'TLSv1.2', '-tls1_2' ]) {
	my ($name, $flag) = @$v;
	my $sess = "$dir/sess-$name.pem";
	my $first = `printf 'QUIT\\r\\n' | timeout 20 openssl s_client $flag -starttls smtp -connect 127.0.0.1:$port -sess_out $sess -ign_eof 2>&1`;
	like($first, qr/^New, \Q$name\E, /m, "$name: the first connection makes a new session");
	my $again = `printf 'QUIT\\r\\n' | timeout 20 openssl s_client $flag -starttls smtp -connect 127.0.0.1:$port -sess_in $sess -ign_eof 2>&1`;
	like($again, qr/^Reused, \Q$name\E, /m, "$name: the second one resumes it (\"Reused\")");
	like($again, qr/^221 /m, "$name: and SMTP goes on inside the resumed session");
}

# --- several certificates chosen by SNI; client certificates asked for
my $TF = ($ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir()) . '/t/modules/.libs/testfilter.so';
SKIP: {
	skip "$TF is not built (make check builds it)", 1 unless -f $TF;

	# A key and a certificate for CN: self-signed, or signed by the CA named.
	my $mkcert = sub {
		my ($name, $cn, $ca) = @_;
		my $req = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		    . "-keyout $dir/$name.key -subj '/CN=$cn'";
		my $cmd = $ca ? "$req -out $dir/$name.csr && openssl x509 -req -in $dir/$name.csr "
		    . "-CA $dir/$ca.pem -CAkey $dir/$ca.key -CAcreateserial -days 2 -out $dir/$name.pem"
		    : "$req -x509 -days 2 -out $dir/$name.pem";
		system("($cmd) >/dev/null 2>&1") == 0 or die "openssl failed for $cn\n";
	};
	$mkcert->('mx', 'mx.example.org');
	$mkcert->('net', 'any.example.net');
	$mkcert->('ca', 'Test Client CA');
	$mkcert->('client', 'client.example.com', 'ca');
	$mkcert->('rogue', 'rogue.example.com');

	my $sni = <<"SNI";
	sni = [ { names = "mx.example.org"; cert = "$dir/mx.pem"; key = "$dir/mx.key"; },
	        { names = [ "*.example.net", "other.test" ];
	          cert = "$dir/net.pem"; key = "$dir/net.key"; } ];
SNI
	# -t: unreadable files and a key that is not the certificate's
	my $check = sub {
		my ($name, $tls) = @_;
		my $conf = spew("$dir/$name.conf", qq{listen = "127.0.0.1:1"; backend = "127.0.0.1:2";\n}
		    . qq{tls { cert = "$cert"; key = "$key";\n$tls}\n});
		my $out = `$ENV{SMTPCHAIN} -t -c $conf 2>&1`;
		return ($? >> 8, $out);
	};
	my ($rc, $out) = $check->('sni-ok', "$sni ask_client_cert = true; client_ca = \"$dir/ca.pem\";\n");
	is($rc, 0, '-t: tls.sni, ask_client_cert and client_ca pass the check') or diag($out);
	($rc, $out) = $check->('sni-nocert', qq{sni = { names = "a.test"; cert = "$dir/none.pem"; key = "$dir/mx.key"; };\n});
	is($rc, 1, '-t: an SNI certificate that cannot be read fails');
	like($out, qr/tls\.sni \(line 3\)\.cert: \Q$dir\E\/none\.pem/, '-t: naming the entry\'s line and the file');
	($rc, $out) = $check->('sni-mismatch', qq{sni = { names = "a.test"; cert = "$dir/mx.pem"; key = "$dir/net.key"; };\n});
	is($rc, 1, '-t: an SNI key that is not its certificate\'s fails');
	like($out, qr/tls\.sni \(line 3\)\.key: \Q$dir\E\/net\.key: not the key of tls\.sni \(line 3\)\.cert/, '-t: saying key values mismatch')
	    or diag($out);
	spew("$dir/mismatch.conf", qq{listen = "127.0.0.1:1"; backend = "127.0.0.1:2";\n}
	    . qq{tls { cert = "$cert"; key = "$dir/mx.key"; }\n});
	$out = `$ENV{SMTPCHAIN} -t -c $dir/mismatch.conf 2>&1`;
	is($? >> 8, 1, '-t: the default key not matching tls.cert fails');
	like($out, qr/tls\.key: \Q$dir\E\/mx\.key: not the key of tls\.cert \(key values mismatch\)/, '-t: saying so') or diag($out);
	($rc, $out) = $check->('sni-badname', qq{sni = { names = [ "ok.test", "bad name" ]; cert = "$dir/mx.pem"; key = "$dir/mx.key"; };\n});
	like($out, qr/sni-badname\.conf:3: tls\.sni\.names: bad name "bad name"/, '-t: a bad SNI name, with file:line')
	    or diag($out);
	($rc, $out) = $check->('sni-nokey', qq{sni = [ { names = "a.test"; cert = "$dir/mx.pem"; } ];\n});
	like($out, qr/sni-nokey\.conf:3: tls\.sni: missing key "key"/, '-t: an SNI entry without key') or diag($out);
	($rc, $out) = $check->('noca', qq{ask_client_cert = true; client_ca = "$dir/missing-ca.pem";\n});
	like($out, qr/noca\.conf:3: tls\.client_ca: \Q$dir\E\/missing-ca\.pem: No such file/, '-t: a missing client_ca')
	    or diag($out);

	# The milter module with the test milter, when both are built: the HELO macros.
	my $build = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
	my ($milter, $milter_block) = (undef, '');
	if (-f "$build/filters/milter/.libs/milter.so" && -x "$build/t/milter/testmilter") {
		my $tmport = free_port();
		$milter = { log => "$dir/testmilter.log" };
		my $pid = SmtpChainTest::spawn(argv => [ "$build/t/milter/testmilter", '-p',
		    "inet:$tmport\@127.0.0.1", '-n', 'tm' ], output => $milter->{log});
		SmtpChainTest::on_cleanup('testmilter', sub { SmtpChainTest::stop_pid($pid, 'KILL', 5) });
		wait_until(sub { SmtpChainTest::port_listening($tmport) || !proc_alive($pid) }, 10);
		$milter_block = "filter { module = \"$build/filters/milter/.libs/milter.so\"; "
		    . "socket = \"inet:$tmport\@127.0.0.1\"; }\n";
	}
	my $multi = start_proxy(<<"CONF");
listen = "127.0.0.1:${\ free_port() }";
backend = "127.0.0.1:${\ $sink->port }";
tls { cert = "$cert"; key = "$key";
$sni	ask_client_cert = true; client_ca = "$dir/ca.pem"; }
timeout { shutdown = 5; }
filter { module = "$TF"; tag = "tls"; trace_get = [ "tls_version", "verify", "cert_subject", "cert_issuer" ]; }
$milter_block
CONF
	my $mport = $multi->port;

	# The subject CN of the certificate served for an SNI name (undef: none sent).
	my $served = sub {
		my ($name) = @_;
		my $arg = defined $name ? "-servername $name" : '-noservername';
		my $o = `timeout 20 openssl s_client -starttls smtp -connect 127.0.0.1:$mport $arg </dev/null 2>/dev/null`;
		return $o =~ /^subject=.*?CN\s*=\s*([^,\n]+)/m ? $1 : "(none: $o)";
	};
	is($served->(undef), 'proxy.test', 'SNI: no name, the default certificate');
	is($served->('mx.example.org'), 'mx.example.org', 'SNI: mx.example.org gets its own certificate');
	is($served->('MX.Example.Org'), 'mx.example.org', 'SNI: names compare without case');
	is($served->('smtp.example.net'), 'any.example.net', 'SNI: *.example.net matches one label');
	is($served->('other.test'), 'any.example.net', 'SNI: the second name of an entry');
	is($served->('a.b.example.net'), 'proxy.test', 'SNI: the wildcard never spans two labels');
	is($served->('example.net'), 'proxy.test', 'SNI: nor matches the bare domain');
	is($served->('unknown.test'), 'proxy.test', 'SNI: an unknown name gets the default');

	# resumption still works with the SNI-selected context
	my $s1 = `printf 'QUIT\\r\\n' | timeout 20 openssl s_client -starttls smtp -connect 127.0.0.1:$mport -servername mx.example.org -sess_out $dir/sni-sess.pem -ign_eof 2>&1`;
	my $s2 = `printf 'QUIT\\r\\n' | timeout 20 openssl s_client -starttls smtp -connect 127.0.0.1:$mport -servername mx.example.org -sess_in $dir/sni-sess.pem -ign_eof 2>&1`;
	like($s2, qr/^Reused, TLSv1\.3, /m, 'SNI: a session of an SNI certificate is resumed');

	# client certificates: trusted, untrusted, none; the message is accepted each time
	my @cases = (
	    [ 'trusted', [ '--tls-cert', "$dir/client.pem", '--tls-key', "$dir/client.key" ],
	      qr/ verify=OK cert_subject=client\.example\.com cert_issuer=Test Client CA$/m,
	      qr/ verify=OK cert_subject="client\.example\.com" cert_issuer="Test Client CA" status=sent/ ],
	    [ 'untrusted', [ '--tls-cert', "$dir/rogue.pem", '--tls-key', "$dir/rogue.key" ],
	      qr/ verify=FAIL cert_subject=- cert_issuer=-$/m,
	      qr/ verify=FAIL cert_subject="rogue\.example\.com" cert_issuer="rogue\.example\.com" status=sent/ ],
	    [ 'none', [], qr/ verify=NO cert_subject=- cert_issuer=-$/m, qr/ verify=NO status=sent/ ],
	);
	for my $c (@cases) {
		my ($what, $args, $header, $logline) = @$c;
		my ($rc, $o) = swaks('--server', '127.0.0.1', '--port', $mport, '--tls', @$args,
		    '--from', 'a@client.test', '--to', 'b@example.test', '--header', "Subject: ccert-$what");
		is($rc, 0, "client certificate $what: the message is accepted") or diag($o);
		my ($m) = $sink->wait_find(qr/ccert-\Q$what\E/);
		my ($h) = ($m ? $m->{message} : '') =~ /^X-Testfilter-tls-Get:(.*)$/m;
		like($h // '', qr/^ tls_version=TLSv1\.[23] /, "client certificate $what: the filter sees tls_version");
		like(($h // '') =~ s/\r$//r, $header, "client certificate $what: the filter sees verify and the CNs");
		ok($multi->wait_log($logline), "client certificate $what: the summary line") or diag($multi->log_tail);
	}
	SKIP: {
		skip 'the milter module or t/milter/testmilter is not built', 2 unless $milter;
		my $mlog = sub { SmtpChainTest::slurp($milter->{log}) // '' };
		ok(wait_until(sub { $mlog->() =~ /helo-tls .*cert_subject=client\.example\.com/ }, 10),
		    'milter: HELO inside TLS carries {cert_subject}') or diag($mlog->());
		like($mlog->(), qr/^tm: helo-tls tls_version=TLSv1\.[23] cert_subject=client\.example\.com cert_issuer=Test Client CA$/m,
		    'milter: {tls_version}, {cert_subject}, {cert_issuer} at HELO (trusted certificate)');
	}
	$multi->stop_ok('the SNI proxy exits 0 on SIGTERM');
}

$proxy->stop_ok('proxy exits 0 on SIGTERM');
done_testing();
