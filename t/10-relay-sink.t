# 10-relay-sink.t - relaying through the proxy to Postfix's smtp-sink.
#
# The sink dumps every mail transaction to a file, so what the backend
# received can be compared with what the client sent; its -v log lists the
# commands it got.  The same commands sent to the sink directly give the
# replies the proxy must relay byte for byte.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $sink = start_sink();
my $bport = $sink->port;

my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$bport";
log { level = "info"; transcript = true; }
timeout { command = 60; data = 60; backend = 60; connect = 10; shutdown = 5; }
EOF
my $port = $proxy->port;

# What the sink itself says, for byte-exact comparisons.
my @direct = smtp_session($bport, ['EHLO client.test', 'NOOP', 'RSET', 'VRFY someone',
    'HELP', 'FOO bar', 'QUIT']);

# --- greeting and EHLO (no ehlo {} block: only what the proxy cannot carry goes)
{
	my $c = smtp_connect($port) or BAIL_OUT("cannot connect to the proxy: $@");
	my $g = $c->read_reply;
	is($g->{raw}, $direct[0]{raw}, 'the greeting is the backend\'s, byte for byte');
	my $e = $c->ehlo('client.test');
	reply_ok($e, 250, undef, 'EHLO accepted');
	is($e->{lines}[0], $direct[1]{lines}[0], 'the first EHLO line is the backend\'s');
	is_deeply([ehlo_keywords($e)], ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', 'DSN'],
	    'EHLO list: AUTH, XCLIENT, XFORWARD (and the sink\'s empty last line) dropped, the rest kept in order')
	    or diag($e->{raw});
	unlike($e->{raw}, qr/XCLIENT|XFORWARD|AUTH|STARTTLS/i, 'no keyword the proxy cannot carry');
	like($e->{raw}, qr/\A(?:250-[^\r\n]*\r\n)*250 [^\r\n]*\r\n\z/, 'a well-formed multi-line 250 reply');

	# --- one message, relayed unchanged
	my $long = 'L' x 2500;
	my $msg = make_message(from => 'sender@client.test', to => 'one@example.test',
	    body => "First line.\r\n.starts with a dot\r\n..two dots\r\n.\r\n \r\n$long\r\n" .
	    "trailing spaces   \r\n\ttab\r\nlast line\r\n");
	my $r = $c->send_mail(from => 'sender@client.test',
	    to => ['one@example.test', 'two@example.test'], data => $msg);
	reply_ok($r->{mail}, 250, '2.1.0', 'MAIL relayed');
	reply_ok($r->{rcpt}[0], 250, '2.1.5', 'first RCPT relayed');
	reply_ok($r->{rcpt}[1], 250, '2.1.5', 'second RCPT relayed');
	reply_ok($r->{data}, 354, undef, 'DATA relayed');
	reply_ok($r->{end}, 250, '2.0.0', 'end of data: the backend\'s 250');
	is($r->{end}{raw}, "250 2.0.0 Ok\r\n", 'the end-of-data reply is the sink\'s text');

	my @m = $sink->wait_messages(1);
	is(scalar @m, 1, 'the sink got one message');
	is($m[0]{message}, to_lf($msg), 'the message arrived unchanged (dots unstuffed once, long line intact)');
	is($m[0]{mail}, '<sender@client.test>', 'envelope sender as sent');
	is_deeply($m[0]{rcpt}, ['<one@example.test>', '<two@example.test>'], 'both recipients, in order');

	# --- commands relayed as the backend answers them
	for my $i (1 .. 5) {
		my $cmd = ('NOOP', 'RSET', 'VRFY someone', 'HELP', 'FOO bar')[$i - 1];
		my $rr = $c->cmd($cmd);
		is($rr->{raw}, $direct[$i + 1]{raw}, "$cmd: the backend's reply, byte for byte");
	}
	my $q = $c->quit;
	reply_ok($q, 221, undef, 'QUIT relayed');
	is($q->{raw}, $direct[-1]{raw}, 'the QUIT reply is the backend\'s');
	my @cmds = $sink->commands;
	# Once from the direct session above, once through the proxy.
	is(scalar(grep { $_ eq 'FOO bar' } @cmds), 2, 'the unknown command reached the backend as sent')
	    or diag(join("\n", @cmds));
	is(scalar(grep { $_ eq 'VRFY someone' } @cmds), 2, 'VRFY reached the backend');
}

# --- the summary log line
{
	my $l = $proxy->wait_log(qr/(client=\[127\.0\.0\.1\]:\d+ [^\n]*from=<sender\@client\.test>[^\n]*)/);
	ok($l, 'one summary line for the message') or diag($proxy->log_tail);
	like($l // '', qr/helo=<?client\.test>?/, 'it has the HELO name');
	like($l // '', qr/nrcpt=2\b/, 'it has the recipient count');
	like($l // '', qr/size=\d+/, 'it has the size');
	like($l // '', qr/reply="250 2\.0\.0 Ok"/, 'it has the backend\'s reply');
	# The transcript marks every direction.
	my $log = $proxy->log_text;
	like($log, qr/c>p[^\n]*MAIL FROM:<sender\@client\.test>/, 'transcript: client to proxy');
	like($log, qr/p>b[^\n]*MAIL FROM:<sender\@client\.test>/, 'transcript: proxy to backend');
	like($log, qr/b>p[^\n]*250 2\.1\.0 Ok/, 'transcript: backend to proxy');
	like($log, qr/p>c[^\n]*250 2\.1\.0 Ok/, 'transcript: proxy to client');
}

# --- HELO instead of EHLO
{
	my $before = () = $sink->files;
	my $c = smtp_connect($port);
	$c->read_reply;
	my $h = $c->cmd('HELO old.client.test');
	my $dh = (smtp_session($bport, ['HELO old.client.test']))[1];
	is($h->{raw}, $dh->{raw}, 'HELO: the backend\'s reply, byte for byte');
	my $msg = make_message(subject => 'via HELO');
	my $r = $c->send_mail(from => 'helo@client.test', to => 'x@example.test', data => $msg);
	reply_ok($r->{end}, 250, undef, 'a message after HELO is accepted');
	$c->quit;
	$sink->wait_messages($before + 1);
	my ($got) = $sink->find(qr/^Subject: via HELO$/m);
	is($got && $got->{message}, to_lf($msg), 'and relayed unchanged');
}

# --- pipelined batches get their replies in order
{
	my $before = () = $sink->files;
	my $c = smtp_connect($port);
	$c->read_reply;
	$c->ehlo('pipe.client.test');
	$c->send("MAIL FROM:<p1\@client.test>\r\nRCPT TO:<a\@example.test>\r\nRCPT TO:<b\@example.test>\r\nDATA\r\n");
	my @r = map { $c->read_reply } 1 .. 4;
	is_deeply([map { ($_->{code} // 'none') . ' ' . ($_->{enh} // '') } @r],
	    ['250 2.1.0', '250 2.1.5', '250 2.1.5', '354 '],
	    'MAIL/RCPT/RCPT/DATA in one write: four replies, in order')
	    or diag(join('', map { SmtpChainTest::Client::describe($_) . "\n" } @r));
	my $m1 = make_message(subject => 'pipelined 1');
	my $m2 = make_message(subject => 'pipelined 2');
	# End of data and the next transaction in one write.
	$c->send(dot_stuff($m1) . ".\r\nMAIL FROM:<p2\@client.test>\r\nRCPT TO:<c\@example.test>\r\nDATA\r\n");
	@r = map { $c->read_reply } 1 .. 4;
	is_deeply([map { ($_->{code} // 'none') . ' ' . ($_->{enh} // '') } @r],
	    ['250 2.0.0', '250 2.1.0', '250 2.1.5', '354 '],
	    'end of data + MAIL/RCPT/DATA in one write: replies in order')
	    or diag(join('', map { SmtpChainTest::Client::describe($_) . "\n" } @r));
	$c->send(dot_stuff($m2) . ".\r\nQUIT\r\n");
	@r = map { $c->read_reply } 1 .. 2;
	reply_ok($r[0], 250, '2.0.0', 'second pipelined message accepted');
	reply_ok($r[1], 221, undef, 'QUIT answered after it');
	ok($c->wait_closed(10), 'the proxy closes after QUIT');
	my @m = $sink->wait_messages($before + 2);
	is(scalar(@m), $before + 2, 'both pipelined messages reached the sink');
	my ($g1) = $sink->find(qr/^Subject: pipelined 1$/m);
	my ($g2) = $sink->find(qr/^Subject: pipelined 2$/m);
	is($g1 && $g1->{message}, to_lf($m1), 'first pipelined message unchanged');
	is($g2 && $g2->{message}, to_lf($m2), 'second pipelined message unchanged');
	is($g2 && $g2->{mail}, '<p2@client.test>', 'second envelope sender');

	# Commands with different replies, pipelined: the order must hold.
	my @s = smtp_session($port, ['EHLO x.test', 'NOOP', 'FOO', 'RSET', 'BAR baz', 'NOOP', 'QUIT'],
	    pipeline => 1);
	is_deeply([map { $_->{code} // 'none' } @s[2 .. 7]], [250, 500, 250, 500, 250, 221],
	    'NOOP/FOO/RSET/BAR/NOOP/QUIT in one write: replies in order');
}

# --- several messages in one session
{
	my $before = () = $sink->files;
	my $c = smtp_connect($port);
	$c->read_reply;
	$c->ehlo('many.client.test');
	my @sent;
	for my $i (1 .. 5) {
		my $msg = make_message(subject => "message $i of 5", body => ("line $i\r\n" x ($i * 100)));
		push @sent, $msg;
		my $r = $c->send_mail(from => "s$i\@client.test", to => "r$i\@example.test", data => $msg);
		reply_ok($r->{end}, 250, '2.0.0', "message $i of 5 accepted");
		if ($i == 3) {
			reply_ok($c->cmd('RSET'), 250, undef, 'RSET between messages');
		}
	}
	$c->quit;
	my @m = $sink->wait_messages($before + 5);
	# The sink finishes its dump files lazily, so their times do not give
	# the order: compare as sets (each message is unique).
	my @got = sort grep { /^Subject: message \d of 5$/m } map { $_->{message} } @m;
	is_deeply(\@got, [sort map { to_lf($_) } @sent],
	    'five messages in one session, all relayed unchanged');
}

# --- swaks through the proxy (with pipelining)
{
	my $before = () = $sink->files;
	my ($rc, $out) = swaks('--server', "127.0.0.1:$port", '--from', 'swaks@client.test',
	    '--to', 'swaks@example.test', '--helo', 'swaks.client.test', '--pipeline',
	    '--header', 'Subject: through swaks');
	is($rc, 0, 'swaks sends a message through the proxy with PIPELINING') or diag($out);
	$sink->wait_messages($before + 1);
	my @got = $sink->find(qr/^Subject: through swaks$/m);
	is(scalar @got, 1, 'the swaks message reached the sink');
}

# --- the ehlo {} rewrite, seen by the client exactly
{
	my $p2 = start_proxy(<<"EOF", name => 'rewrite');
backend = "127.0.0.1:$bport";
ehlo {
    remove = [ "dsn" ];
    add    = [ "X-EXAMPLE", "DELIVERBY 240", "8BITMIME" ];
    size   = 10485760;
}
timeout { shutdown = 5; }
EOF
	my @s = smtp_session($p2->port, ['EHLO client.test', 'QUIT']);
	is($s[1]{raw}, join('', "250-sink.test\r\n", "250-PIPELINING\r\n", "250-8BITMIME\r\n",
	    "250-ENHANCEDSTATUSCODES\r\n", "250-X-EXAMPLE\r\n", "250-DELIVERBY 240\r\n",
	    "250 SIZE 10485760\r\n"),
	    'ehlo {}: DSN removed (case-insensitive), 8BITMIME replaced in place, X-EXAMPLE and DELIVERBY appended, SIZE added')
	    or diag($s[1]{raw});

	# DELIVERBY was added by the operator: its MAIL parameter passes through.
	my $dc = smtp_connect($p2->port);
	$dc->read_reply;
	$dc->ehlo('client.test');
	my $dm = make_message(subject => 'deliver by');
	my $dr = $dc->send_mail(from => 'by@client.test', mail_params => 'BY=120;R', to => 'x@example.test', data => $dm);
	reply_ok($dr->{mail}, 250, undef, 'MAIL with BY= (DELIVERBY added by ehlo.add) is relayed');
	reply_ok($dr->{end}, 250, undef, 'and the message accepted');
	$dc->quit;
	my ($bym) = $sink->wait_find(qr/^Subject: deliver by$/m);
	is($bym && $bym->{mail}, '<by@client.test> BY=120;R', 'the backend got the BY= parameter as sent');

	# Operator removal of PIPELINING: the client must not pipeline, but a
	# client that does still gets its replies (the proxy reads line by line).
	my $p3 = start_proxy(<<"EOF", name => 'nopipe');
backend = "127.0.0.1:$bport";
ehlo { remove = [ "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN" ]; }
timeout { shutdown = 5; }
EOF
	@s = smtp_session($p3->port, ['EHLO client.test', 'QUIT']);
	is($s[1]{raw}, "250 sink.test\r\n", 'everything removed: a one-line EHLO reply with the backend\'s name')
	    or diag($s[1]{raw});
	$p2->stop_ok('the rewrite proxy exits 0 on SIGTERM');
	$p3->stop_ok('the no-pipelining proxy exits 0 on SIGTERM');
}

# --- -d: debug level and a transcript without any log {} setting
{
	my $pd = start_proxy(<<"EOF", name => 'debug', args => ['-d']);
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
EOF
	my @s = smtp_session($pd->port, ['EHLO debug.client.test', 'NOOP', 'QUIT']);
	reply_ok($s[2], 250, undef, 'a session through a proxy started with -d');
	my $l = $pd->wait_log(qr/(p>c[^\n]*221[^\n]*)/);
	ok($l, '-d: the transcript is in the log') or diag($pd->log_tail);
	my $log = $pd->log_text;
	like($log, qr/c>p[^\n]*EHLO debug\.client\.test/, '-d: client lines marked c>p');
	like($log, qr/b>p[^\n]*250/, '-d: backend lines marked b>p');
	like($log, qr/: debug: /, '-d: debug-level lines');
	$pd->stop_ok('the -d proxy exits 0');
}

# --- a backend without ESMTP: EHLO refused is relayed, the client falls back to HELO (RFC 5321)
{
	my $plain = start_sink(name => 'noesmtp', args => ['-e']);
	my $pp = start_proxy(<<"EOF", name => 'noesmtp');
backend = "127.0.0.1:${\ $plain->port }";
timeout { shutdown = 5; }
EOF
	my @r = smtp_session($pp->port, ['EHLO client.test', 'HELO client.test',
	    'MAIL FROM:<a@client.test>', 'RCPT TO:<b@example.test>', 'DATA',
	    ["Subject: helo-fallback\r\n\r\nbody\r\n.\r\n", 1], 'QUIT']);
	like($r[1]{raw}, qr/^5\d\d /, 'EHLO refused by the backend: its 5xx is relayed');
	like($r[2]{raw}, qr/^250 /, 'HELO then works');
	like($r[6]{raw}, qr/^250 /, 'and a message goes through after the fallback');
	ok(scalar $plain->wait_find(qr/helo-fallback/), 'delivered');
	$pp->stop_ok('the no-ESMTP proxy exits 0 on SIGTERM');
}

# --- IPv6 listener
SKIP: {
	my $v6 = eval { SmtpChainTest::free_port('::1') };
	skip 'no IPv6 loopback here', 3 unless $v6;
	my $p6 = start_proxy(<<"EOF", name => 'ipv6');
listen = "[::1]:$v6";
backend = "127.0.0.1:$bport";
timeout { shutdown = 5; }
EOF
	my $c = smtp_connect($v6, host => '::1');
	ok($c, 'the proxy listens on [::1]');
	my $g = $c ? $c->read_reply : undef;
	is($g && $g->{raw}, $direct[0]{raw}, 'and relays the greeting there');
	$c->quit if $c;
	$p6->stop_ok('the IPv6 proxy exits 0 on SIGTERM');
}

# --- the prelude's EHLO is remembered: a backend without XCLIENT gets the
# proxy's own EHLO once (per worker, for a minute), later sessions start
# with the client's first command, and XFORWARD still goes by what that
# EHLO listed, for a HELO client too.
{
	my $s2 = start_sink(name => 'memo');
	my $p2 = start_proxy(<<"EOF", name => 'memo');
backend = "127.0.0.1:${\ $s2->port}";
hostname = "memo.proxy.test";
workers = 1;
timeout { shutdown = 5; }
EOF
	for my $i (1 .. 3) {
		my $c = smtp_connect($p2->port);
		is($c->read_reply->{raw}, $direct[0]{raw}, "session $i: the backend's greeting, byte for byte");
		reply_ok($c->cmd("HELO helo$i.client.test"), 250, undef, "session $i: HELO");
		my $r = $c->send_mail(from => "s$i\@client.test", to => 'one@example.test',
		    data => make_message(subject => "memo $i"));
		reply_ok($r->{end}, 250, undef, "session $i: the message is accepted");
		$c->quit;
	}
	$s2->wait_messages(3);
	my @cmd = $s2->commands;
	is(scalar(grep { /^EHLO memo\.proxy\.test$/i } @cmd), 1,
	    'three sessions: the sink got the proxy\'s own EHLO once') or diag(join("\n", @cmd));
	is(scalar(grep { /^HELO helo\d\.client\.test$/i } @cmd), 3, 'and each client\'s HELO');
	is(scalar(grep { /^XFORWARD .*ADDR=127\.0\.0\.1/i } @cmd), 3,
	    'XFORWARD with the client\'s address before each MAIL (capabilities remembered)');
	$p2->stop_ok('the proxy exits 0');
}

$proxy->stop_ok;
unlike($proxy->log_text, qr/\bwarning: .*(?:panic|assert)/i, 'no internal error in the log');

done_testing;
