# 36-backend-tls.t - TLS from the proxy to the backend (backend_tls).
#
# A real Postfix with a test certificate (smtpd_tls_security_level = may)
# relaying to an smtp-sink, so what it accepted can be read back byte for
# byte; a bare smtp-sink as a backend that offers no STARTTLS; and a small
# fake backend (IO::Socket::SSL) for what a real MTA does not do on demand:
# bytes sent after its 220 to STARTTLS, close_notify in the middle of a
# session.  Clients connect from 127.0.0.2, so XCLIENT after TLS is seen in
# Postfix's Received header.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Socket::SSL;
use POSIX qw(_exit);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;

my $dir = tmpdir();
my ($cert, $key) = ("$dir/backend-cert.pem", "$dir/backend-key.pem");
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
    . "-subj /CN=backend.test -addext subjectAltName=DNS:backend.test >/dev/null 2>&1") == 0
    or die "openssl req failed\n";
chmod 0644, $cert;

my $delivered = start_sink(name => 'delivered');
my $pf = start_postfix(relay_port => $delivered->port, tls_cert => $cert, tls_key => $key);
my $plain = start_sink(name => 'plain');	# offers no STARTTLS

# The proxy in front of a backend with these extra lines.
sub proxy_for {
	my ($name, $port, $extra) = @_;
	return start_proxy(qq{backend = "127.0.0.1:$port";\ntimeout { shutdown = 5; }\n$extra}, name => $name);
}

# One message through a proxy from 127.0.0.2; returns (greeting, send_mail result).
sub mail_through {
	my ($proxy, $msg, %o) = @_;
	my $c = smtp_connect($proxy->port, local_addr => '127.0.0.2') or die "connect: $@\n";
	my $g = $c->read_reply;
	return ($g, undef) unless $g->{code} && $g->{code} == 220;
	$c->ehlo('client.test');
	my $r = $c->send_mail(from => 'sender@client.test', to => $o{to} || 'rcpt@example.test',
	    data => $msg);
	$c->quit;
	return ($g, $r);
}

# The message as the sink got it from Postfix, without Postfix's Received header.
sub from_postfix {
	my ($re) = @_;
	my ($m) = $delivered->wait_find($re, 30);
	return (undef, undef) unless $m;
	my $t = $m->{message};
	my $trace = $t =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)// ? $1 : '';
	return ($t, $trace);
}

# How many messages Postfix's smtpd took in so far ("QUEUEID: client=" lines).
sub accepted_by_postfix {
	my @ids = $pf->maillog =~ /smtpd\[\d+\]: [0-9A-F]+: client=/g;
	return scalar @ids;
}

# --- config checks (-t)
{
	my $base = qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:2";\n};
	my $check = sub {
		my ($name, $text) = @_;
		my $f = spew("$dir/$name.conf", $base . $text);
		my $out = `$ENV{SMTPCHAIN} -t -c $f 2>&1`;
		return ($? >> 8, $out);
	};
	my ($rc, $out) = $check->('badmode', qq{backend_tls = "required";\n});
	is($rc, 1, '-t: a bad backend_tls value fails');
	like($out, qr/badmode\.conf:3: backend_tls: expected "none", "may" or "encrypt", got "required"/,
	    '-t: naming the key, the value and the line') or diag($out);
	($rc, $out) = $check->('noca', qq{backend_tls = "encrypt";\nbackend_tls_name = "backend.test";\n}
	    . qq{backend_tls_ca = "$dir/missing-ca.pem";\n});
	is($rc, 1, '-t: a missing CA file fails');
	like($out, qr/noca\.conf:5: backend_tls_ca: \Q$dir\E\/missing-ca\.pem: No such file or directory/,
	    '-t: naming backend_tls_ca, the file and the line') or diag($out);
	spew("$dir/not-a-ca.pem", "this is no certificate\n");
	($rc, $out) = $check->('badca', qq{backend_tls = "may";\nbackend_tls_ca = "$dir/not-a-ca.pem";\n});
	is($rc, 1, '-t: a CA file without certificates fails');
	like($out, qr/badca\.conf: backend_tls_ca: \Q$dir\E\/not-a-ca\.pem: /, '-t: naming the file')
	    or diag($out);
	($rc, $out) = $check->('noname', qq{backend_tls = "encrypt";\n});
	is($rc, 1, '-t: encrypt without backend_tls_name fails');
	like($out, qr/noname\.conf:3: backend_tls: "encrypt" needs backend_tls_name/, '-t: saying so')
	    or diag($out);
	($rc, $out) = $check->('badname', qq{backend_tls_name = "[127.0.0.1]";\n});
	is($rc, 1, '-t: an address literal as backend_tls_name fails');
	like($out, qr/badname\.conf:3: backend_tls_name: bad name "\[127\.0\.0\.1\]"/, '-t: saying so')
	    or diag($out);
	($rc, $out) = $check->('good', qq{backend_tls = "encrypt";\nbackend_tls_name = "backend.test";\n}
	    . qq{backend_tls_ca = "$cert";\n});
	is($rc, 0, '-t: a good backend TLS config passes') or diag($out);
}

# Postfix offers STARTTLS to the proxy (sanity).
{
	my @direct = smtp_session($pf->port, ['EHLO client.test', 'QUIT']);
	like($direct[1]{raw}, qr/^250[- ]STARTTLS\r$/m, 'Postfix offers STARTTLS (sanity)');
}

# --- encrypt: verified against the CA for the right name; XCLIENT inside TLS
my $enc = proxy_for('encrypt', $pf->port, <<"EOF");
backend_tls = "encrypt";
backend_tls_ca = "$cert";
backend_tls_name = "backend.test";
EOF
{
	my $direct_greeting = (smtp_session($pf->port, ['QUIT']))[0];
	my $msg = make_message(subject => 'backend-tls-encrypt',
	    body => "Line one\r\n.leading dot\r\n..two dots\r\n\r\n\x{e4} 8-bit\r\nend\r\n");
	my ($g, $r) = mail_through($enc, $msg);
	reply_ok($g, 220, undef, 'encrypt: the client gets a 220 greeting');
	is($g->{raw}, $direct_greeting->{raw}, 'encrypt: the greeting is Postfix\'s (after XCLIENT)');
	reply_ok($r && $r->{end}, 250, '2.0.0', 'encrypt: the message is queued');
	my ($got, $trace) = from_postfix(qr/backend-tls-encrypt/);
	is($got, to_lf($msg), 'encrypt: delivered byte for byte');
	like($trace // '', qr/\[127\.0\.0\.2\]/, 'encrypt: XCLIENT inside TLS: Postfix names the real client');
	like($trace // '', qr/\(using TLSv1\.[23] with cipher /, 'encrypt: Postfix received the message over TLS')
	    or diag($trace);
	ok($pf->wait_maillog(qr/(TLS connection established from [^\n]*127\.0\.0\.1\]: TLSv1\.[23])/),
	    'encrypt: Postfix\'s maillog shows the TLS connection') or diag($pf->maillog);
	ok($enc->wait_log(qr/(backend TLS established: TLSv1\.[23] with cipher \S+, certificate verified for backend\.test)/),
	    'encrypt: the proxy logs TLS and the verified name') or diag($enc->log_tail);
	ok($enc->wait_log(qr/( nrcpt=1 size=\d+ backend_tls=TLSv1\.[23]\/\S+ status=sent )/),
	    'encrypt: the summary line shows the backend side\'s TLS') or diag($enc->log_tail);
}

# --- encrypt: the client's EHLO list is Postfix's list after TLS, STARTTLS never shown
{
	my $c = smtp_connect($enc->port, local_addr => '127.0.0.2') or die "connect: $@\n";
	$c->read_reply;
	my $e = $c->ehlo('client.test');
	reply_ok($e, 250, undef, 'encrypt: EHLO answered');
	ok(!(grep { /^STARTTLS\b/ } ehlo_keywords($e)), 'encrypt: the backend\'s STARTTLS is not relayed');
	ok((grep { /^PIPELINING\b/ } ehlo_keywords($e)), 'encrypt: the rest of the list is there');

	# Several messages, one pipelined transaction, and a large one on the same connection.
	$c->send("MAIL FROM:<p\@client.test>\r\nRCPT TO:<a\@example.test>\r\nRCPT TO:<b\@example.test>\r\nDATA\r\n");
	my @p = map { $c->read_reply } 1 .. 4;
	ok($p[0]{code} == 250 && $p[1]{code} == 250 && $p[2]{code} == 250 && $p[3]{code} == 354,
	    'encrypt: a pipelined envelope through TLS') or diag(join ' | ', map { $_->{raw} // '' } @p);
	my $m1 = make_message(subject => 'backend-tls-pipelined');
	$c->send(dot_stuff($m1) . ".\r\n");
	reply_ok($c->read_reply, 250, '2.0.0', 'encrypt: pipelined message queued');

	my $line = join('', map { chr(33 + ($_ % 90)) } 0 .. 997) . "\r\n";
	my $big = make_message(subject => 'backend-tls-big', body => ($line x 5000) . ".last line with a dot\r\n");
	my $r = $c->send_mail(from => 'big@client.test', to => 'rcpt@example.test', data => $big);
	reply_ok($r->{end}, 250, '2.0.0', 'encrypt: a 5 MB message queued');
	$c->quit;
	my ($got) = from_postfix(qr/backend-tls-pipelined/);
	is($got, to_lf($m1), 'encrypt: the pipelined message is delivered byte for byte');
	($got) = from_postfix(qr/backend-tls-big/);
	ok(defined $got && $got eq to_lf($big), 'encrypt: the 5 MB message is delivered byte for byte')
	    or diag('got ' . length($got // '') . ' bytes, sent ' . length(to_lf($big)));
}

# --- may in front of Postfix: TLS without verification; without XCLIENT
{
	my $may = proxy_for('may', $pf->port, qq{backend_tls = "may";\nxclient = false;\n});
	my $msg = make_message(subject => 'backend-tls-may');
	my $direct_greeting = (smtp_session($pf->port, ['QUIT']))[0];
	my ($g, $r) = mail_through($may, $msg);
	is($g->{raw}, $direct_greeting->{raw}, 'may, no XCLIENT: the client sees Postfix\'s first greeting');
	reply_ok($r && $r->{end}, 250, '2.0.0', 'may: the message is queued');
	my ($got, $trace) = from_postfix(qr/backend-tls-may/);
	is($got, to_lf($msg), 'may: delivered byte for byte');
	like($trace // '', qr/\(using TLSv1\.[23] with cipher /, 'may: Postfix received it over TLS');
	ok($may->wait_log(qr/(backend TLS established: TLSv1\.[23] with cipher \S+, certificate not verified \([^)]+\))/),
	    'may: the proxy logs TLS, certificate not verified (and why)') or diag($may->log_tail);
	$may->stop_ok('may proxy exits 0');
}

# --- encrypt with the wrong name: 421, nothing delivered, a clear log line
{
	my $before = accepted_by_postfix();
	my $wrong = proxy_for('wrongname', $pf->port, <<"EOF");
backend_tls = "encrypt";
backend_tls_ca = "$cert";
backend_tls_name = "other.test";
EOF
	my $c = smtp_connect($wrong->port) or die "connect: $@\n";
	my $g = $c->read_reply;
	reply_ok($g, 421, '4.7.5', 'wrong name: the client gets 421 4.7.5 as the greeting');
	like($g->{raw} // '', qr/backend TLS failed/, 'wrong name: saying backend TLS failed');
	ok($c->wait_closed(10), 'wrong name: and the connection is closed');
	$c->close;
	ok($wrong->wait_log(qr/(backend 127\.0\.0\.1:\d+: TLS failed: TLS handshake: certificate verify failed \(hostname mismatch\))/),
	    'wrong name: the log says why (hostname mismatch)') or diag($wrong->log_tail);
	is(accepted_by_postfix(), $before, 'wrong name: nothing reached Postfix\'s queue');
	$wrong->stop_ok('wrong-name proxy exits 0');
}

# --- encrypt with the system's CA store: the self-signed certificate is not trusted
{
	my $untrusted = proxy_for('untrusted', $pf->port, qq{backend_tls = "encrypt";\nbackend_tls_name = "backend.test";\n});
	my ($g) = smtp_session($untrusted->port, []);
	reply_ok($g, 421, '4.7.5', 'untrusted CA: 421 4.7.5');
	ok($untrusted->wait_log(qr/(TLS failed: TLS handshake: certificate verify failed \(self[- ]signed certificate\))/),
	    'untrusted CA: the log says self-signed certificate') or diag($untrusted->log_tail);
	$untrusted->stop_ok('untrusted-CA proxy exits 0');
}

# --- a backend without STARTTLS: encrypt refuses, may goes on in plaintext
{
	my $encsink = proxy_for('encrypt-sink', $plain->port, <<"EOF");
backend_tls = "encrypt";
backend_tls_ca = "$cert";
backend_tls_name = "backend.test";
EOF
	my $c = smtp_connect($encsink->port) or die "connect: $@\n";
	my $g = $c->read_reply;
	reply_ok($g, 421, '4.7.5', 'encrypt, no STARTTLS offered: 421 4.7.5');
	ok($c->wait_closed(10), 'encrypt, no STARTTLS offered: closed');
	$c->close;
	ok($encsink->wait_log(qr/(TLS failed: STARTTLS not offered \(backend_tls = encrypt\))/),
	    'encrypt, no STARTTLS offered: logged') or diag($encsink->log_tail);
	unlike($plain->log_text, qr/MAIL FROM/i, 'encrypt, no STARTTLS: no envelope went out in plaintext');
	$encsink->stop_ok('encrypt-sink proxy exits 0');

	my $maysink = proxy_for('may-sink', $plain->port, qq{backend_tls = "may";\n});
	my $msg = make_message(subject => 'backend-tls-may-plain');
	my ($g2, $r) = mail_through($maysink, $msg);
	reply_ok($g2, 220, undef, 'may, no STARTTLS offered: the greeting');
	like($g2->{raw} // '', qr/^220 sink\.test /, 'may, no STARTTLS offered: it is the sink\'s');
	reply_ok($r && $r->{end}, 250, undef, 'may, no STARTTLS offered: accepted in plaintext');
	my ($m) = $plain->wait_find(qr/backend-tls-may-plain/);
	is($m && $m->{message}, to_lf($msg), 'may, no STARTTLS offered: delivered byte for byte');
	ok($maysink->wait_log(qr/(offers no STARTTLS: going on in plaintext \(backend_tls = may\))/),
	    'may, no STARTTLS offered: logged') or diag($maysink->log_tail);
	ok($maysink->wait_log(qr/( size=\d+ backend_tls=none status=sent )/),
	    'may, no STARTTLS offered: the summary line says backend_tls=none') or diag($maysink->log_tail);
	$maysink->stop_ok('may-sink proxy exits 0');
}

# --- a fake backend: one scripted behaviour per connection
#   inject:   "220 ready" to STARTTLS with a command right behind it, in the clear
#   notify:   TLS, then close_notify (and close) after MAIL FROM
sub fake_backend {
	my ($mode) = @_;
	my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5,
	    ReuseAddr => 1) or die "fake backend: $!\n";
	my $port = $srv->sockport;
	my $pid = fork();
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		$SIG{$_} = 'DEFAULT' for qw(TERM INT);
		$SIG{ALRM} = sub { _exit(0) };
		alarm(60);
		while (my $s = $srv->accept) {
			my $line = sub { my $l = <$s>; defined $l or _exit(0); $l };
			$s->autoflush(1);
			print $s "220 fake.test ESMTP\r\n";
			$line->();	# EHLO
			print $s "250-fake.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
			$line->();	# STARTTLS
			if ($mode eq 'inject') {
				print $s "220 2.0.0 Ready\r\n250 injected\r\n";
				sleep 2;
				close $s;
				next;
			}
			print $s "220 2.0.0 Ready\r\n";
			IO::Socket::SSL->start_SSL($s, SSL_server => 1, SSL_cert_file => $cert,
			    SSL_key_file => $key, Timeout => 10) or _exit(1);
			$line = sub { my $l = <$s>; defined $l or _exit(0); $l };
			$line->();	# EHLO again
			print $s "250-fake.test\r\n250 PIPELINING\r\n";
			$line->();	# the client's EHLO
			print $s "250-fake.test\r\n250 PIPELINING\r\n";
			$line->();	# MAIL
			$s->close(SSL_no_shutdown => 0, SSL_ctx_free => 0);	# close_notify
		}
		_exit(0);
	}
	close $srv;
	on_cleanup_kill($pid);
	return $port;
}

my @fakes;
sub on_cleanup_kill { push @fakes, $_[0] }
END { local $?; for (@fakes) { kill 'TERM', $_; waitpid($_, 0) } }

{
	my $port = fake_backend('inject');
	my $p = proxy_for('inject', $port, qq{backend_tls = "may";\n});
	my ($g) = smtp_session($p->port, []);
	reply_ok($g, 421, '4.7.5', 'bytes after the backend\'s 220 to STARTTLS: 421 4.7.5');
	ok($p->wait_log(qr/(TLS failed: \d+ bytes after the 220 to STARTTLS)/),
	    'and the log says so') or diag($p->log_tail);
	unlike($p->log_text, qr/injected/, 'the injected reply was never taken as an answer');
	$p->stop_ok('inject proxy exits 0');
}
{
	my $port = fake_backend('notify');
	my $p = proxy_for('notify', $port, <<"EOF");
backend_tls = "encrypt";
backend_tls_ca = "$cert";
backend_tls_name = "backend.test";
EOF
	my $c = smtp_connect($p->port) or die "connect: $@\n";
	reply_ok($c->read_reply, 220, undef, 'close_notify: the fake backend\'s greeting, after TLS');
	reply_ok($c->ehlo('client.test'), 250, undef, 'close_notify: EHLO inside TLS');
	my $r = $c->cmd('MAIL FROM:<a@client.test>');
	reply_ok($r, 421, '4.3.0', 'close_notify from the backend mid-session: 421 4.3.0 to the client');
	ok($c->wait_closed(10), 'close_notify: the session ends');
	$c->close;
	ok($p->wait_log(qr/(backend 127\.0\.0\.1:\d+: TLS: backend closed TLS \(close_notify\))/),
	    'close_notify: logged') or diag($p->log_tail);
	$p->stop_ok('notify proxy exits 0');
}

$enc->stop_ok('encrypt proxy exits 0 on SIGTERM');
done_testing();
