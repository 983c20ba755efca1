# 30-smuggling.t - SMTP smuggling (bare CR / bare LF) must not get through.
#
# The backend is a real Postfix 3.7 with smtpd_forbid_bare_newline = no: it
# takes a bare LF as a line end, so by itself it can be smuggled a second
# message (checked first, without the proxy, so the test is known to be able
# to see a smuggled message).  Through the proxy, every classic payload must
# get a 5xx, and neither the smuggled message nor the interrupted one may be
# delivered.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;

my $sink = start_sink(name => 'delivered');
my $pf = start_postfix(relay_port => $sink->port);
my $bport = $pf->port;

my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
EOF
my $port = $proxy->port;

# The bytes after DATA: a legitimate start, the payload, then a whole second
# transaction, then a proper end of data (which a strict server would take
# as the end of the first message).
sub attack {
	my ($tag, $payload) = @_;
	return "From: <legit-$tag\@client.test>\r\nSubject: legit $tag\r\n\r\nlegitimate body\r\n" .
	    "more$payload" .
	    "MAIL FROM:<smuggled-$tag\@evil.test>\r\nRCPT TO:<victim\@example.test>\r\nDATA\r\n" .
	    "From: <ceo\@example.test>\r\nSubject: smuggled $tag\r\n\r\nsmuggled body\r\n.\r\n";
}

# --- control: Postfix alone is vulnerable, and the test sees it
{
	my $c = smtp_connect($bport);
	$c->read_reply;
	$c->ehlo('attacker.test');
	$c->send("MAIL FROM:<legit-control\@client.test>\r\nRCPT TO:<victim\@example.test>\r\nDATA\r\n");
	my @r = map { $c->read_reply } 1 .. 3;
	reply_ok($r[2], 354, undef, 'control: DATA to Postfix directly');
	$c->send(attack('control', "\n.\n"));
	my @after = map { $c->read_reply(5) } 1 .. 5;
	$c->close;
	is_deeply([map { $_->{code} // 'none' } @after], [250, 250, 250, 354, 250],
	    'control: Postfix alone takes "\n.\n" as an end of data and accepts the smuggled transaction');
	my @m = $sink->wait_find(qr/^Subject: smuggled control$/m, 30);
	is(scalar @m, 1, 'control: the smuggled message is delivered without the proxy (the test can see it)');
}

# --- through the proxy
my @payloads = (
	['LF.LF',     "\n.\n"],
	['CRLF.LF',   "\r\n.\n"],
	['LF.CRLF',   "\n.\r\n"],
	['CR.CRLF',   "\r.\r\n"],
	['CRLF.CR',   "\r\n.\r"],
	['CR.CR',     "\r.\r"],
	['bare-LF',   "\n"],
	['bare-CR',   "\r"],
);
for my $p (@payloads) {
	my ($tag, $payload) = @$p;
	my $c = smtp_connect($port, local_addr => '127.0.0.2');
	$c->read_reply;
	$c->ehlo('attacker.test');
	my $r = $c->send_mail(from => "legit-$tag\@client.test", to => 'victim@example.test',
	    raw_data => attack($tag, $payload));
	reply_ok($r->{data}, 354, undef, "$tag: DATA accepted");
	my $end = $r->{end};
	ok($end->{code} && $end->{code} >= 500 && $end->{code} < 600, "$tag: the client gets a 5xx")
	    or diag(SmtpChainTest::Client::describe($end));
	reply_ok($end, 521, '5.5.2', "$tag: it is 521 5.5.2");
	like($end->{text} // '', qr/bare <CR> or <LF>/, "$tag: saying why");
	my ($after) = $c->{transcript} =~ /^354 [^\n]*\n(.*)\z/ms;
	is($after, "521 5.5.2 proxy.test Error: bare <CR> or <LF> in message data\r\n",
	    "$tag: after the 354 the client sees the 521 and nothing else");
	ok($c->wait_closed(5), "$tag: the proxy closes the connection");
	$c->close;
}

# A canary through the proxy: once Postfix has queued it, everything sent
# before it has been either queued or dropped.
{
	my $c = smtp_connect($port);
	$c->read_reply;
	$c->ehlo('canary.test');
	my $r = $c->send_mail(from => 'canary@client.test', to => 'victim@example.test',
	    data => make_message(subject => 'canary'));
	reply_ok($r->{end}, 250, undef, 'a clean message after the attempts is accepted');
	$c->quit;
	ok($sink->wait_find(qr/^Subject: canary$/m, 30), 'and delivered');
}
my $log = $pf->maillog;
for my $p (@payloads) {
	my $tag = $p->[0];
	unlike($log, qr/from=<smuggled-\Q$tag\E\@/, "$tag: Postfix never queued the smuggled message");
	unlike($log, qr/from=<legit-\Q$tag\E\@/, "$tag: nor the interrupted one");
	is(scalar($sink->find(qr/^Subject: (?:smuggled|legit) \Q$tag\E$/m)), 0, "$tag: nothing delivered");
}
my $lost = () = $log =~ /lost connection after DATA[^\n]* from [^\s\[]*\[127\.0\.0\.2\]/g;
is($lost, scalar @payloads, 'Postfix saw every attempt end with a dropped connection inside DATA')
    or diag($log);

# --- bare CR / LF in command lines: 500 5.5.2, nothing forwarded, session goes on
#
# A command line ends at LF, as Postfix reads it; a line whose LF has no CR
# before it, or with a CR anywhere else, is refused whole.  What follows the
# LF is the next line, so proxy and backend always agree on the boundaries.
{
	my $s = start_sink(name => 'commands');
	my $p = start_proxy(<<"EOF", name => 'commands');
backend = "127.0.0.1:@{[ $s->port ]}";
timeout { shutdown = 5; }
EOF
	my $c = smtp_connect($p->port);
	$c->read_reply;
	$c->ehlo('client.test');
	my @cases = (
		['bare LF ending a command', "MAIL FROM:<lf-end\@client.test>\n", [500]],
		['bare CR inside a command', "MAIL FROM:<cr-inside\@client.test>\rRCPT TO:<cr-rcpt\@example.test>\r\n", [500]],
		['CR CR LF', "MAIL FROM:<crcrlf\@client.test>\r\r\n", [500]],
		['bare CR at the start', "\rMAIL FROM:<cr-start\@client.test>\r\n", [500]],
		['bare LF, then a good line', "RSET\nMAIL FROM:<after-lf\@client.test>\r\n", [500, 250]],
	);
	for my $case (@cases) {
		my ($what, $bytes, $codes) = @$case;
		$c->send($bytes);
		my @r = map { $c->read_reply } @$codes;
		reply_ok($r[0], 500, '5.5.2', "$what: 500 5.5.2");
		like($r[0]{text} // '', qr/bare <CR> or <LF>/, "$what: saying why");
		is_deeply([map { $_->{code} // 'none' } @r], $codes, "$what: replies " . join('/', @$codes));
		reply_ok($c->cmd('NOOP'), 250, undef, "$what: the session goes on");
	}
	reply_ok($c->cmd('RSET'), 250, undef, 'RSET');
	my $r = $c->send_mail(from => 'after@client.test', to => 'x@example.test',
	    data => make_message(subject => 'after bare commands'));
	reply_ok($r->{end}, 250, undef, 'a message after the refused commands goes through');
	$c->quit;
	$s->wait_find(qr/^Subject: after bare commands$/m);
	my @cmds = $s->commands;
	is_deeply([grep { /lf-end|cr-inside|cr-rcpt|crcrlf|cr-start|\r/ } @cmds], [],
	    'none of the refused command lines (nor pieces of them) reached the backend')
	    or diag(join("\n", @cmds));
	is(scalar(grep { $_ eq 'MAIL FROM:<after-lf@client.test>' } @cmds), 1,
	    'the good line after a bare LF reached the backend as a line of its own');
	ok(!(grep { /^RSET.*MAIL/ } @cmds), 'and the refused part did not stick to it');
	$p->stop_ok('the command-line proxy exits 0');
}

$proxy->stop_ok;
done_testing;
