# 37-auth.t - AUTH (RFC 4954) relayed to a real Exim with plaintext
# authenticators: offered only inside TLS (538 before), PLAIN and LOGIN
# with success, failure and cancel, CRAM-MD5 (swaks) with success and failure, the identity in the summary line, and
# no credential anywhere in the transcript.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Socket::SSL;
use MIME::Base64 qw(encode_base64);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
if (my $why = exim_missing()) { plan skip_all => $why }

my ($user, $pass) = ('alice', 'Pa55-w0rd-secret');
my $exim = start_exim(authenticators => <<"AUTH");
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and {{eq{\$auth2}{$user}}{eq{\$auth3}{$pass}}}}
  server_set_id = \$auth2
login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = \${if and {{eq{\$auth1}{$user}}{eq{\$auth2}{$pass}}}}
  server_set_id = \$auth1
cram:
  driver = cram_md5
  public_name = CRAM-MD5
  server_secret = \${if eq{\$auth1}{$user}{$pass}fail}
  server_set_id = \$auth1
AUTH

my $dir = tmpdir();
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
    . "-subj /CN=proxy.test >/dev/null 2>&1") == 0 or die "openssl req failed\n";
my $proxy = start_proxy(<<"CONF");
backend = "127.0.0.1:${\ $exim->port }";
log { level = "info"; transcript = true; }
tls { cert = "$cert"; key = "$key"; }
timeout { shutdown = 5; }
CONF
my $port = $proxy->port;

# A line-oriented client that can switch to TLS.
sub client {
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
	    or die "connect: $!";
	my $c = { s => $s };
	$c->{read} = sub {
		my $r = '';
		while (defined(my $l = $c->{s}->getline)) { $r .= $l; last if $l =~ /^\d{3} /; }
		return $r;
	};
	$c->{cmd} = sub { print { $c->{s} } "$_[0]\r\n"; return $c->{read}->() };
	$c->{read}->();
	return $c;
}

sub tls_client {
	my $c = client();
	$c->{cmd}->('EHLO client.test');
	$c->{cmd}->('STARTTLS') =~ /^220/ or die "no STARTTLS\n";
	IO::Socket::SSL->start_SSL($c->{s}, SSL_verify_mode => SSL_VERIFY_NONE, Timeout => 10)
	    or die "start_SSL: $SSL_ERROR";
	return $c;
}

# --- before TLS: not offered, refused with 538
{
	my $c = client();
	my $ehlo = $c->{cmd}->('EHLO client.test');
	unlike($ehlo, qr/^250[- ]AUTH/m, 'before TLS: AUTH is not offered');
	like($ehlo, qr/^250[- ]STARTTLS/m, 'before TLS: STARTTLS is');
	like($c->{cmd}->('AUTH PLAIN ' . encode_base64("\0$user\0$pass", '')),
	    qr/^538 5\.7\.11 /, 'AUTH before TLS: 538 5.7.11');
	$c->{cmd}->('QUIT');
}

# --- PLAIN with an initial response: success, then mail as that user
{
	my $c = tls_client();
	my $ehlo = $c->{cmd}->('EHLO client.test');
	like($ehlo, qr/^250[- ]AUTH .*PLAIN/m, "inside TLS: AUTH offered with the backend's mechanisms");
	unlike($ehlo, qr/STARTTLS/, 'inside TLS: no STARTTLS');
	like($c->{cmd}->('AUTH PLAIN ' . encode_base64("\0$user\0$pass", '')), qr/^235 /,
	    'AUTH PLAIN: 235 from Exim');
	like($c->{cmd}->('AUTH PLAIN ' . encode_base64("\0$user\0$pass", '')), qr/^503 /,
	    'a second AUTH: 503');
	like($c->{cmd}->('MAIL FROM:<alice@example.test>'), qr/^250 /, 'MAIL after AUTH');
	like($c->{cmd}->('RCPT TO:<bob@example.test>'), qr/^250 /, 'RCPT');
	like($c->{cmd}->('DATA'), qr/^354 /, 'DATA');
	like($c->{cmd}->("Subject: authenticated\r\n\r\nhello\r\n."), qr/^250 /, 'message accepted');
	$c->{cmd}->('QUIT');
	ok($proxy->wait_log(qr/sasl_username=\Q$user\E .*status=sent/), 'summary line: sasl_username');
	ok(wait_until(sub { $exim->mainlog =~ /A=plain:\Q$user\E/ }, 10),
	    'Exim logged the authenticated user');
}

# --- LOGIN with 334 continuations; a wrong password; a cancel
{
	my $c = tls_client();
	$c->{cmd}->('EHLO client.test');
	like($c->{cmd}->('AUTH LOGIN'), qr/^334 /, 'AUTH LOGIN: 334 (username)');
	like($c->{cmd}->(encode_base64($user, '')), qr/^334 /, '334 (password)');
	like($c->{cmd}->(encode_base64('wrong-password', '')), qr/^535 /, 'wrong password: 535 from Exim');
	like($c->{cmd}->('AUTH LOGIN'), qr/^334 /, 'AUTH LOGIN again');
	like($c->{cmd}->('*'), qr/^501 /, 'cancel with "*": 501');
	like($c->{cmd}->('AUTH LOGIN'), qr/^334 /, 'and again');
	$c->{cmd}->(encode_base64($user, ''));
	like($c->{cmd}->(encode_base64($pass, '')), qr/^235 /, 'AUTH LOGIN: 235');
	like($c->{cmd}->('NOOP'), qr/^250 /, 'the session goes on after AUTH');
	$c->{cmd}->('QUIT');
	ok($proxy->wait_log(qr/authenticated: sasl_method=LOGIN sasl_username=\Q$user\E/),
	    'log: authenticated with LOGIN as the user');
}

# --- CRAM-MD5 with swaks over STARTTLS: the 334 challenge, the digest response
my @cram_responses;
{
	my @common = ('--server', '127.0.0.1', '--port', $port, '--tls', '--auth', 'CRAM-MD5',
	    '--auth-user', $user, '--from', "$user\@example.test", '--to', 'bob@example.test');
	my ($rc, $out) = swaks(@common, '--auth-password', $pass, '--header', 'Subject: cram-ok');
	is($rc, 0, 'CRAM-MD5: swaks authenticates and sends') or diag($out);
	like($out, qr/^ *<~ +334 \S+/m, 'CRAM-MD5: the client saw the 334 challenge');
	like($out, qr/^ *<~ +235 /m, 'CRAM-MD5: 235 from Exim');
	push @cram_responses, $out =~ /^ *<~ +334 \S+\s*^ *~> +(\S+)/mg;
	ok($proxy->wait_log(qr/authenticated: sasl_method=CRAM-MD5 sasl_username=\Q$user\E/),
	    'log: authenticated with CRAM-MD5 as the user') or diag($proxy->log_tail);
	ok(wait_until(sub { $exim->mainlog =~ /A=cram:\Q$user\E/ }, 10),
	    'CRAM-MD5: Exim logged the authenticated user');

	($rc, $out) = swaks(@common, '--auth-password', 'wrong-password', '--header', 'Subject: cram-bad');
	isnt($rc, 0, 'CRAM-MD5 with a wrong password: swaks fails');
	like($out, qr/^ *<~\* +535 /m, 'CRAM-MD5 with a wrong password: 535 from Exim') or diag($out);
	push @cram_responses, $out =~ /^ *<~ +334 \S+\s*^ *~> +(\S+)/mg;
	is(scalar @cram_responses, 2, 'CRAM-MD5: both digest responses taken from swaks\'s output');
}

# --- no secret in the transcript
{
	my $log = $proxy->log_text;
	my $b64pass = encode_base64($pass, '');
	my $b64plain = encode_base64("\0$user\0$pass", '');
	unlike($log, qr/\Q$pass\E/, 'transcript: the password never appears');
	unlike($log, qr/\Q$b64pass\E/, 'transcript: nor in base64');
	unlike($log, qr/\Q$b64plain\E/, 'transcript: nor the PLAIN response');
	like($log, qr/c>p AUTH PLAIN \(initial response not logged\)/,
	    'transcript: AUTH shows the mechanism only');
	like($log, qr/c>p \(AUTH data not logged\)/, 'transcript: continuation lines masked');
	unlike($log, qr/\Q$_\E/, 'transcript: no CRAM-MD5 response line') for @cram_responses;
	like($log, qr/c>p AUTH CRAM-MD5\r?$/m, 'transcript: AUTH CRAM-MD5 shown');
	like($log, qr/p>c 334 \S+/, 'transcript: the 334 challenge may show');
}

$proxy->stop_ok('proxy exits 0 on SIGTERM');
done_testing();
