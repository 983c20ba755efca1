# 20-postfix.t - a real Postfix behind the proxy.
#
# Postfix (a private instance, see start_postfix) relays everything it
# accepts to an smtp-sink, so the delivered message can be read back.  The
# client connects from 127.0.0.2; with XCLIENT, Postfix must log and stamp
# that address, not the proxy's 127.0.0.1.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;

my $sink = start_sink(name => 'delivered');
my $pf = start_postfix(relay_port => $sink->port,
    rcpt_access => "/^reject\@example\\.test\$/ 550 5.7.1 Custom rejection for this test\n");
my $bport = $pf->port;

my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$bport";
xclient = true;
xforward = true;
workers = 1;
log { transcript = true; }
timeout { shutdown = 5; }
EOF
my $port = $proxy->port;

# What Postfix says directly, for byte-exact comparisons.
my @direct = smtp_session($bport, ['EHLO client.test', 'MAIL FROM:<d@client.test>',
    'RCPT TO:<reject@example.test>', 'VRFY nobody', 'QUIT']);
like($direct[1]{raw}, qr/XCLIENT/, 'Postfix offers XCLIENT to the proxy\'s address (sanity)');

my $c = smtp_connect($port, local_addr => '127.0.0.2')
    or BAIL_OUT("cannot connect to the proxy from 127.0.0.2: $@");
my $g = $c->read_reply;
is($g->{raw}, $direct[0]{raw}, 'the greeting is Postfix\'s, byte for byte');

my $e = $c->ehlo('client.test');
reply_ok($e, 250, undef, 'EHLO');
unlike($e->{raw}, qr/XCLIENT|XFORWARD/, 'XCLIENT and XFORWARD never appear in the client\'s EHLO list');
my @expect = grep { !/^(?:XCLIENT|XFORWARD)\b/ } ehlo_keywords($direct[1]);
is_deeply([ehlo_keywords($e)], \@expect,
    'the rest of Postfix\'s list is shown as it is, in order') or diag($e->{raw});
is($e->{lines}[0], $direct[1]{lines}[0], 'the first EHLO line is Postfix\'s');

# One message to two recipients, one of them refused by Postfix.
my $msg = make_message(from => 'real@client.test', to => 'rcpt@example.test',
    subject => 'through Postfix', body => "Body line 1\r\n.dot line\r\n\r\nÄ 8-bit line\r\nend\r\n");
my $r = $c->send_mail(from => 'real@client.test', mail_params => 'BODY=8BITMIME',
    to => ['rcpt@example.test', 'reject@example.test'], data => $msg);
reply_ok($r->{mail}, 250, '2.1.0', 'MAIL accepted');
reply_ok($r->{rcpt}[0], 250, '2.1.5', 'the good recipient is accepted');
reply_ok($r->{rcpt}[1], 550, '5.7.1', 'the refused recipient gets Postfix\'s 550');
is($r->{rcpt}[1]{raw}, $direct[3]{raw}, 'with Postfix\'s exact text');
like($r->{rcpt}[1]{raw}, qr/Custom rejection for this test/, '(the text from the access table)');
reply_ok($r->{end}, 250, '2.0.0', 'the message is queued');
my ($qid) = ($r->{end}{text} // '') =~ /queued as ([0-9A-F]+)/;
ok($qid, 'Postfix\'s queue id comes back to the client') or diag($r->{end}{raw});

my @m = $sink->wait_messages(1, 30);
is(scalar @m, 1, 'Postfix delivered one message');
my $got = $m[0]{message} // '';
my $trace = $got =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)// ? $1 : '';
ok($trace, 'Postfix added its Received header');
is($got, to_lf($msg), 'the delivered message is the one sent, apart from Postfix\'s trace header');
like($trace, qr/\[127\.0\.0\.2\]/, 'Postfix\'s Received header names the real client 127.0.0.2 (XCLIENT)');
like($trace, qr/^Received: from client\.test /, 'and the client\'s HELO name');
unlike($trace, qr/\[127\.0\.0\.1\]/, 'not the proxy\'s address');
is_deeply($m[0]{rcpt}, ['<rcpt@example.test> ORCPT=rfc822;rcpt@example.test'],
    'only the accepted recipient was delivered');

my $log = $pf->wait_maillog(qr/(\Q$qid\E: client=[^\n]*)/) if $qid;
like($log // '', qr/client=[^\s\[]*\[127\.0\.0\.2\]/, 'Postfix\'s maillog shows the real client [127.0.0.2]')
    or diag($pf->maillog);

# Pipelined recipients with mixed answers keep their order.
$c->send("MAIL FROM:<pipe\@client.test>\r\nRCPT TO:<a\@example.test>\r\n" .
    "RCPT TO:<reject\@example.test>\r\nRCPT TO:<b\@example.test>\r\nRSET\r\n");
my @p = map { $c->read_reply } 1 .. 5;
is_deeply([map { $_->{code} // 'none' } @p], [250, 250, 550, 250, 250],
    'pipelined MAIL/RCPT/RCPT(refused)/RCPT/RSET: replies in order');

# VRFY through Postfix.
my $v = $c->cmd('VRFY nobody');
is($v->{raw}, $direct[4]{raw}, 'VRFY: Postfix\'s reply, byte for byte');

# The client may not speak XCLIENT or XFORWARD itself.
reply_ok($c->cmd('XCLIENT ADDR=192.0.2.1'), 502, '5.5.1', 'XCLIENT from the client: 502 5.5.1');
reply_ok($c->cmd('XFORWARD ADDR=192.0.2.1'), 502, '5.5.1', 'XFORWARD from the client: 502 5.5.1');

# BDAT to a backend offering CHUNKING.
{
	my $body = make_message(subject => 'via BDAT', body => "chunked\r\nbody\r\n.dot stays single\r\n");
	my $half = int(length($body) / 2);
	$c->send("MAIL FROM:<bdat\@client.test>\r\nRCPT TO:<rcpt\@example.test>\r\n");
	my @b = map { $c->read_reply } 1 .. 2;
	reply_ok($b[1], 250, undef, 'RCPT before BDAT');
	$c->send("BDAT $half\r\n" . substr($body, 0, $half));
	reply_ok($c->read_reply, 250, undef, 'first BDAT chunk accepted');
	my $rest = substr($body, $half);
	$c->send('BDAT ' . length($rest) . " LAST\r\n" . $rest);
	reply_ok($c->read_reply, 250, '2.0.0', 'BDAT LAST: the message is queued');
	my ($bm) = $sink->wait_find(qr/^Subject: via BDAT$/m, 30);
	my $bt = $bm ? $bm->{message} : '';
	$bt =~ s/\AReceived: [^\n]*\n(?:[ \t][^\n]*\n)*//;
	is($bt, to_lf($body), 'the BDAT message is delivered unchanged');
}

# SMTPUTF8, offered by Postfix, passes.
{
	my $u = make_message(subject => 'utf8', from => "j\x{c3}\x{bc}rgen\@client.test");
	my $ur = $c->send_mail(from => "j\x{c3}\x{bc}rgen\@client.test", mail_params => 'SMTPUTF8',
	    to => 'rcpt@example.test', data => $u);
	reply_ok($ur->{mail}, 250, undef, 'MAIL with SMTPUTF8 and a UTF-8 address passes to Postfix');
	reply_ok($ur->{end}, 250, undef, 'and the message is queued');
}
reply_ok($c->quit, 221, undef, 'QUIT');

# The proxy's summary line for the first message.
my $sl = $proxy->wait_log(qr/(client=\[127\.0\.0\.2\]:\d+ [^\n]*from=<real\@client\.test>[^\n]*)/);
ok($sl, 'the proxy logs the message with the real client') or diag($proxy->log_tail);
like($sl // '', qr/nrcpt=1\b/, 'one recipient accepted');
like($sl // '', qr/reply="250 2\.0\.0 Ok: queued as \Q$qid\E"/, 'and Postfix\'s reply') if $qid;

# A second session within the minute: the proxy remembers that Postfix
# offers XCLIENT and sends it right after the greeting, without its own
# EHLO first.  Postfix still sees, logs and stamps the real client.
{
	my $c2 = smtp_connect($port, local_addr => '127.0.0.4');
	is($c2->read_reply->{raw}, $direct[0]{raw}, 'second session: the greeting is Postfix\'s, byte for byte');
	reply_ok($c2->ehlo('second.client.test'), 250, undef, 'second session: EHLO');
	my $r2 = $c2->send_mail(from => 'second@client.test', to => 'rcpt@example.test',
	    data => make_message(subject => 'second session'));
	reply_ok($r2->{end}, 250, '2.0.0', 'second session: the message is queued');
	$c2->quit;
	my ($sm) = $sink->wait_find(qr/^Subject: second session$/m, 30);
	like($sm ? $sm->{message} : '', qr/\AReceived: from second\.client\.test \([^\n]*\[127\.0\.0\.4\]/,
	    'Postfix\'s Received header names the second client [127.0.0.4] (XCLIENT)')
	    or diag($sm ? $sm->{message} : 'not delivered');
	my @prelude = $proxy->log_text =~ /: p>b EHLO proxy\.test/g;
	is(scalar @prelude, 1, 'the proxy sent its own EHLO in the first session only')
	    or diag(join("\n", grep { /EHLO|XCLIENT/ } split /\n/, $proxy->log_text));
}

# ETRN, offered by Postfix, is relayed.
{
	my @d = smtp_session($bport, ['EHLO client.test', 'ETRN example.test', 'QUIT']);
	my @v = smtp_session($port, ['EHLO client.test', 'ETRN example.test', 'QUIT']);
	is($v[2]{raw}, $d[2]{raw}, 'ETRN: Postfix\'s reply, byte for byte');
}

# SIZE: the smaller of the backend's and ehlo.size.
for my $case ([10485760, 10485760], [30000000, 20000000]) {
	my ($cap, $want) = @$case;
	my $p = start_proxy(<<"EOF", name => "size$cap");
backend = "127.0.0.1:$bport";
ehlo { size = $cap; }
timeout { shutdown = 5; }
EOF
	my @s = smtp_session($p->port, ['EHLO client.test', 'QUIT']);
	my @sz = grep { /^SIZE\b/ } ehlo_keywords($s[1]);
	is_deeply(\@sz, ["SIZE $want"], "ehlo.size = $cap with Postfix's SIZE 20000000: SIZE $want shown");
	$p->stop_ok("the size=$cap proxy exits 0");
}

# XFORWARD only (xclient = false): Postfix records the real client as the
# message's origin.
{
	my $p = start_proxy(<<"EOF", name => 'xforward');
backend = "127.0.0.1:$bport";
xclient = false;
xforward = true;
timeout { shutdown = 5; }
EOF
	my $xc = smtp_connect($p->port, local_addr => '127.0.0.3');
	$xc->read_reply;
	$xc->ehlo('xf.client.test');
	my $xm = make_message(subject => 'via XFORWARD');
	my $xr = $xc->send_mail(from => 'xf@client.test', to => 'rcpt@example.test', data => $xm);
	reply_ok($xr->{end}, 250, undef, 'a message with XFORWARD is queued');
	$xc->quit;
	my ($xd) = $sink->wait_find(qr/^Subject: via XFORWARD$/m, 30);
	like($xd ? $xd->{message} : '', qr/\AReceived: from xf\.client\.test /,
	    'Postfix\'s Received header has the forwarded HELO name')
	    or diag($xd ? $xd->{message} : 'not delivered');
	like($pf->maillog, qr/client=[^\s\[]*\[127\.0\.0\.1\], orig_client=[^\s\[]*\[127\.0\.0\.3\]/,
	    'Postfix logs the session from the proxy and orig_client=[127.0.0.3] (XFORWARD, no XCLIENT)')
	    or diag($pf->maillog);
	$p->stop_ok('the XFORWARD proxy exits 0');
}

# Extensions the operator removed, although Postfix offers them: the proxy
# refuses their commands and parameters itself.
{
	my $p = start_proxy(<<"EOF", name => 'removed');
backend = "127.0.0.1:$bport";
ehlo { remove = [ "CHUNKING", "SMTPUTF8" ]; }
log { transcript = true; }
timeout { shutdown = 5; }
EOF
	my $rc = smtp_connect($p->port);
	$rc->read_reply;
	my $re = $rc->ehlo('client.test');
	my @kw = ehlo_keywords($re);
	ok(!(grep { /^(?:CHUNKING|SMTPUTF8)$/ } @kw), 'CHUNKING and SMTPUTF8 removed from Postfix\'s list')
	    or diag($re->{raw});
	is($rc->cmd('MAIL FROM:<u@client.test> SMTPUTF8')->{raw},
	    "555 5.5.4 Error: unsupported parameter SMTPUTF8\r\n", 'MAIL with SMTPUTF8: 555 5.5.4 from the proxy');
	my $u = $rc->cmd("MAIL FROM:<r\xc3\xa9mi-removed\@client.test>");
	reply_ok($u, 553, '5.6.7', 'a UTF-8 address without SMTPUTF8: 553 5.6.7');
	reply_ok($rc->cmd('MAIL FROM:<plain@client.test>'), 250, undef, 'plain MAIL goes on to Postfix');
	reply_ok($rc->cmd('RCPT TO:<rcpt@example.test>'), 250, undef, 'RCPT');
	is($rc->cmd('BDAT 5 LAST')->{raw}, "502 5.5.1 Error: command not implemented\r\n",
	    'BDAT with CHUNKING removed: 502 5.5.1 (the chunk is not read)');
	my $dm = make_message(subject => 'after refused BDAT');
	$rc->send("DATA\r\n");
	reply_ok($rc->read_reply, 354, undef, 'DATA instead');
	$rc->send(dot_stuff($dm) . ".\r\n");
	reply_ok($rc->read_reply, 250, undef, 'the message is queued');
	$rc->quit;
	my ($d) = $sink->wait_find(qr/^Subject: after refused BDAT$/m, 30);
	ok($d, 'and delivered');
	unlike($pf->maillog, qr/mi-removed\@client\.test/, 'Postfix never saw the UTF-8 address');
	my $tr = $p->log_text;
	like($tr, qr/c>p[^\n]*MAIL FROM:<u\@client\.test> SMTPUTF8/, '(the transcript shows what the client sent)');
	unlike($tr, qr/p>b[^\n]*(?:SMTPUTF8|mi-removed|BDAT)/, 'the transcript shows none of the refused commands sent to Postfix');
	$p->stop_ok('the proxy with removed extensions exits 0');
}

$proxy->stop_ok;
done_testing;
