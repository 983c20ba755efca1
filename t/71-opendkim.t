# 71-opendkim.t - a real milter, OpenDKIM (Debian's opendkim), through the
# milter module: signing, then verification, and the same signer behind a
# real Postfix for comparison.
#
# The key pair is made here with opendkim-genkey.  The verifier reads the
# public key from a TestPublicKeys file instead of the DNS.  The signed
# message goes from the sink back into a proxy whose milter is OpenDKIM in
# verify mode; its Authentication-Results header says whether the signature
# holds.  A folded Subject is signed with simple/simple canonicalization, so
# the header bytes the module hands the milter must be exactly those Postfix
# would hand it.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
plan skip_all => "$module is not built" unless -f $module;
my $opendkim = SmtpChainTest::find_program('opendkim');
my $genkey = SmtpChainTest::find_program('opendkim-genkey');
plan skip_all => 'opendkim and opendkim-genkey are needed (apt-get install opendkim opendkim-tools)'
    unless $opendkim && $genkey;

our $TODO;
my $HELD_CRLF = 'daemon bug: a message held after DATA gets an extra CRLF at its end';

my $dir = tmpdir();

# --- the key pair and the verifier's key table
system($genkey, '-D', $dir, '-d', 'example.test', '-s', 'test', '-b', '1024') == 0
    or BAIL_OUT('opendkim-genkey failed');
my $txt = slurp("$dir/test.txt") // '';
my $record = join('', $txt =~ /"([^"]*)"/g);
like($record, qr/^v=DKIM1;.*p=[A-Za-z0-9+\/=]{100,}/, 'the public key record');
spew("$dir/keys", "test._domainkey.example.test $record\n");

# Start OpenDKIM with these settings; waits until it listens.
sub start_opendkim {
	my ($name, $settings) = @_;
	my $port = free_port();
	my $conf = spew("$dir/$name.conf", "Syslog no\nBackground no\nRequireSafeKeys false\n" .
	    "Socket inet:$port\@127.0.0.1\nPidFile $dir/$name.pid\n$settings");
	my $log = "$dir/$name.log";
	my $pid = SmtpChainTest::spawn(argv => [$opendkim, '-f', '-x', $conf], output => $log);
	SmtpChainTest::on_cleanup("opendkim $name", sub { SmtpChainTest::stop_pid($pid, 'TERM', 10) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 15);
	die "opendkim $name did not come up: " . (slurp($log) // '') . "\n"
	    unless SmtpChainTest::port_listening($port);
	return { port => $port, pid => $pid, log => $log };
}

my $signer = start_opendkim('signer', "Mode s\nDomain example.test\nSelector test\n" .
    "KeyFile $dir/test.private\nCanonicalization simple/simple\n");
my $verifier = start_opendkim('verifier', "Mode v\nTestPublicKeys $dir/keys\n" .
    "AuthservID verifier.test\n");

my $sink = start_sink();

# A proxy in front of the sink whose milter is at port.
sub milter_proxy {
	my ($name, $port) = @_;
	my $sport = $sink->port;
	return start_proxy(qq{backend = "127.0.0.1:$sport";\ntimeout { shutdown = 5; }\n} .
	    "filter {\n\tmodule = \"$module\";\n\tsocket = \"inet:127.0.0.1:$port\";\n" .
	    "\tdefault_action = \"tempfail\";\n}\n", name => $name);
}

# Send one message through port; returns the reply to the end of data.
sub send_through {
	my ($port, $data) = @_;
	my $c = smtp_connect($port, timeout => 30) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	my $r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'], data => $data);
	$c->quit;
	return $r->{end};
}

# The delivered message with this tag, as received (LF line ends).
sub delivered {
	my ($re) = @_;
	my @m = $sink->wait_find($re, 20);
	return $m[-1];
}

# A header's unfolded value (the first one of that name), or undef.
sub header {
	my ($text, $name) = @_;
	my ($head) = split /\n\n/, $text, 2;
	return undef unless $head =~ /^\Q$name\E:[ \t]*(.*(?:\n[ \t].*)*)/mi;
	(my $v = $1) =~ s/\n[ \t]+/ /g;
	return $v;
}

# The tags of a DKIM-Signature value.
sub dkim_tags {
	my ($v) = @_;
	my %t;
	for (split /;/, $v // '') {
		next unless /^\s*([a-z]+)\s*=\s*(.*?)\s*$/s;
		my ($k, $val) = ($1, $2);
		$val =~ s/\s+//g;
		$t{$k} = $val;
	}
	return \%t;
}

# The message as the next hop would get it again: CRLF, without the sink's Received.
sub resend_text {
	my ($m) = @_;
	(my $t = $m->{message}) =~ s/\n/\r\n/g;
	return $t;
}

# Verify a delivered message: through the verifying proxy; returns its
# Authentication-Results value.
my $vproxy = milter_proxy('verify', $verifier->{port});
sub verify {
	my ($text, $tag) = @_;
	my $end = send_through($vproxy->port, $text);
	return (undef, $end) unless $end && $end->{code} && $end->{code} == 250;
	my $m;
	wait_until(sub {
		($m) = grep { $_->{message} =~ /^Authentication-Results:/m } $sink->find(qr/\Q$tag\E/);
		return $m;
	}, 20);
	return ($m ? header($m->{message}, 'Authentication-Results') : undef, $end);
}

my $tag = sprintf('dkim-%d', $$);
my $msg = "From: Sender <sender\@example.test>\r\nTo: <rcpt\@example.org>\r\n" .
    "Subject: a folded subject line for $tag,\r\n\tsigned with simple canonicalization\r\n" .
    "Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$tag\@example.test>\r\n" .
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" .
    "Hello,\r\n\r\nthis body is signed.\r\n.A line that starts with a dot.\r\n  Indented.\r\n";

# --- signing through the proxy
my $sproxy = milter_proxy('sign', $signer->{port});
my $end = send_through($sproxy->port, $msg);
reply_ok($end, 250, undef, 'signing: 250 at end of data');
my $signed = delivered(qr/\Q$tag\E/);
ok($signed, 'signing: delivered') or BAIL_OUT('nothing delivered: ' . $sproxy->log_tail);
my $sig = header($signed->{message}, 'DKIM-Signature');
ok($sig, 'signing: a DKIM-Signature header') or diag($signed->{message});
my $st = dkim_tags($sig);
is($st->{d}, 'example.test', 'signing: d=example.test');
is($st->{s}, 'test', 'signing: s=test');
is($st->{c}, 'simple/simple', 'signing: simple/simple');
like($st->{h} // '', qr/(?:^|:)Subject(?::|$)/i, 'signing: the folded Subject is signed');
like($signed->{message}, qr/\ADKIM-Signature: v=1;/, 'signing: the header is first, one space after the colon');
like($signed->{message}, qr/^Subject: a folded subject line for \Q$tag\E,\n\tsigned with/m,
    'signing: the folded Subject is delivered as it came');

# --- verification through the proxy
my ($ar, $vend) = verify(resend_text($signed), $tag);
reply_ok($vend, 250, undef, 'verify: 250 at end of data');
like($ar // '', qr/^verifier\.test;.*\bdkim=pass\b.*header\.d=example\.test/,
    'verify: Authentication-Results says dkim=pass for example.test')
    or diag(slurp($verifier->{log}) // '');

# A changed body does not verify: the verifier is not a rubber stamp.
(my $tampered = resend_text($signed)) =~ s/this body is signed\./this body was changed./;
$tampered =~ s/\Q$tag\E/$tag-tampered/g;
my ($bad) = verify($tampered, "$tag-tampered");
like($bad // '', qr/\bdkim=fail\b/, 'verify: a changed body gives dkim=fail');

# --- the same signer behind a real Postfix
SKIP: {
	skip 'a private Postfix needs root', 6 unless $> == 0;
	my $pf = start_postfix(relay_port => $sink->port,
	    main => "smtpd_milters = inet:127.0.0.1:$signer->{port}\n" .
		"milter_default_action = tempfail\nmilter_protocol = 6\n");
	(my $pmsg = $msg) =~ s/\Q$tag\E/$tag-postfix/g;
	my $pend = send_through($pf->port, $pmsg);
	reply_ok($pend, 250, undef, 'postfix: 250 at end of data');
	my $psigned = delivered(qr/\Q$tag-postfix\E/);
	ok($psigned, 'postfix: delivered') or diag($pf->maillog);
	my $ptags = dkim_tags($psigned ? header($psigned->{message}, 'DKIM-Signature') : undef);
	is_deeply([map { $ptags->{$_} } qw(v a c d s h)], [map { $st->{$_} } qw(v a c d s h)],
	    'postfix: the same signature tags (v a c d s h) as through the proxy');
	is($ptags->{bh}, $st->{bh}, 'postfix: the same body hash');
	my ($par) = $psigned ? verify(resend_text($psigned), "$tag-postfix") : (undef);
	like($par // '', qr/\bdkim=pass\b/, 'postfix: its signature verifies the same way (dkim=pass)');
	like($pf->maillog, qr/status=sent/, 'postfix: relayed the message');
	$pf->stop;
}

$sproxy->stop_ok('signing proxy exits 0');
$vproxy->stop_ok('verifying proxy exits 0');

done_testing();
