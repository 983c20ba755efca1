# 25-exim.t - a real Exim behind the proxy.
#
# Exim 4.96 from Debian's packages, unpacked by t/setup-exim.sh (Postfix and
# Exim conflict as packages), run in the foreground on the test's port; it
# delivers mail for example.test into a maildir, one file per message.
# Exim offers extensions the proxy does not carry (PIPECONNECT, PRDR,
# STARTTLS): they must not reach the client.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
if (my $why = exim_missing()) {
	plan skip_all => $why;
}

my $exim = start_exim();
my $bport = $exim->port;

my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
EOF
my $port = $proxy->port;

my @direct = smtp_session($bport, ['EHLO client.test', 'MAIL FROM:<d@client.test>',
    'RCPT TO:<reject@example.test>', 'QUIT']);
like($direct[1]{raw}, qr/^250-PIPECONNECT\r$/m, 'Exim offers PIPECONNECT (sanity)');
like($direct[1]{raw}, qr/^250-PRDR\r$/m, 'Exim offers PRDR (sanity)');

my $c = smtp_connect($port) or BAIL_OUT("cannot connect to the proxy: $@");
my $g = $c->read_reply;
reply_ok($g, 220, undef, 'greeting');
like($g->{raw}, qr/\A220 exim\.test ESMTP Exim 4\.\d+ [^\r\n]+\r\n\z/, 'it is Exim\'s greeting, as Exim sends it');

my $e = $c->ehlo('client.test');
reply_ok($e, 250, undef, 'EHLO');
is($e->{lines}[0], '250-exim.test Hello client.test [127.0.0.1]', 'the first line is Exim\'s, with the client\'s EHLO name');
is_deeply([ehlo_keywords($e)], [grep { !/^(?:PIPECONNECT|PRDR|STARTTLS)$/ } ehlo_keywords($direct[1])],
    'PIPECONNECT, PRDR and STARTTLS dropped; SIZE, 8BITMIME, PIPELINING, CHUNKING, SMTPUTF8, HELP kept in order')
    or diag($e->{raw});
unlike($e->{raw}, qr/PIPECONNECT|PRDR|STARTTLS/, 'none of the dropped keywords appears');

my $msg = make_message(subject => 'through Exim', body => "Exim body\r\n.dotted\r\n..double\r\nend\r\n");
my $r = $c->send_mail(from => 'sender@client.test', to => ['u@example.test', 'reject@example.test'],
    data => $msg);
reply_ok($r->{rcpt}[0], 250, undef, 'RCPT accepted by Exim');
is($r->{rcpt}[1]{raw}, $direct[3]{raw}, 'Exim\'s 550 for the refused recipient, byte for byte');
reply_ok($r->{end}, 250, undef, 'the message is accepted');
like($r->{end}{raw}, qr/\A250 OK id=\S+\r\n\z/, 'with Exim\'s reply text');
my @m = $exim->wait_messages(1, 30);
is(scalar @m, 1, 'Exim delivered one message');
is($m[0]{message}, to_lf($msg), 'the delivered message is the one sent, apart from Exim\'s Received header');
like($m[0]{received} // '', qr/^Received: from \[127\.0\.0\.1\] \(helo=client\.test\)/,
    'Exim saw the client\'s HELO name');

# BDAT to Exim (CHUNKING offered).
{
	my $body = make_message(subject => 'BDAT to Exim', body => "chunk one\r\n.dot\r\n");
	$c->send("MAIL FROM:<b\@client.test>\r\nRCPT TO:<u\@example.test>\r\n");
	my @x = map { $c->read_reply } 1 .. 2;
	reply_ok($x[1], 250, undef, 'RCPT before BDAT');
	my $n = int(length($body) / 3);
	$c->send("BDAT $n\r\n" . substr($body, 0, $n));
	reply_ok($c->read_reply, 250, undef, 'BDAT chunk to Exim');
	my $rest = substr($body, $n);
	$c->send('BDAT ' . length($rest) . " LAST\r\n$rest");
	reply_ok($c->read_reply, 250, undef, 'BDAT LAST to Exim');
	@m = $exim->wait_messages(2, 30);
	my ($bm) = grep { $_->{message} =~ /^Subject: BDAT to Exim$/m } @m;
	is($bm && $bm->{message}, to_lf($body), 'the BDAT message is delivered unchanged');
}
reply_ok($c->quit, 221, undef, 'QUIT');

# HELO: no extensions, so the proxy must refuse ESMTP parameters itself.
{
	my $h = smtp_connect($port);
	$h->read_reply;
	my $hr = $h->cmd('HELO old.client.test');
	is($hr->{raw}, "250 exim.test Hello old.client.test [127.0.0.1]\r\n", 'HELO: Exim\'s one-line reply');
	reply_ok($h->cmd('MAIL FROM:<h@client.test> SIZE=100'), 555, '5.5.4',
	    'after HELO, MAIL with SIZE= (no extension offered) gets 555 5.5.4');
	my $hm = make_message(subject => 'after HELO');
	my $x = $h->send_mail(from => 'h@client.test', to => 'u@example.test', data => $hm);
	reply_ok($x->{end}, 250, undef, 'a plain message after HELO is accepted');
	$h->quit;
	my ($got) = grep { $_->{message} =~ /^Subject: after HELO$/m } $exim->wait_messages(3, 30);
	is($got && $got->{message}, to_lf($hm), 'and delivered unchanged');
	like($got ? $got->{received} : '', qr/helo=old\.client\.test/, 'Exim saw the HELO name');
}

# SIZE capped below Exim's.
{
	my $p = start_proxy(<<"EOF", name => 'size');
backend = "127.0.0.1:$bport";
ehlo { size = 1000000; remove = [ "CHUNKING" ]; add = [ "X-EXTRA" ]; }
timeout { shutdown = 5; }
EOF
	my @s = smtp_session($p->port, ['EHLO client.test', 'MAIL FROM:<s@client.test> SIZE=2000000', 'QUIT']);
	is_deeply([ehlo_keywords($s[1])], ['SIZE 1000000', '8BITMIME', 'PIPELINING', 'SMTPUTF8', 'HELP', 'X-EXTRA'],
	    'SIZE capped to ehlo.size, CHUNKING removed, X-EXTRA appended') or diag($s[1]{raw});
	reply_ok($s[2], 552, '5.3.4', 'SIZE= over the cap: 552 5.3.4 from the proxy');
	$p->stop_ok('the size proxy exits 0');
}

$proxy->stop_ok;
like($exim->mainlog, qr/<= sender\@client\.test H=\(client\.test\) \[127\.0\.0\.1\]/,
    'Exim logged the message from the proxy with the client\'s HELO');

done_testing;
