# 40-failures.t - limits, refusals, timeouts and lost peers.
#
# The backend is smtp-sink (its -v log lists every command it got, its dump
# directory every completed message) with flags that make it fail on
# purpose: -q CMD (disconnect without replying), -W CMD:SECS (stall).
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $H = 'proxy.test';

# A proxy in front of backend port b with extra config text.
sub proxy_for {
	my ($name, $bport, $extra) = @_;
	return start_proxy(qq{backend = "127.0.0.1:$bport";\n} . ($extra // '') .
	    (($extra // '') =~ /^\s*timeout\b/m ? '' : "timeout { shutdown = 5; }\n"), name => $name);
}

# Connect, read the greeting, EHLO; returns the client.
sub ehlo_client {
	my ($port, %o) = @_;
	my $c = smtp_connect($port, %o) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	return $c;
}

my $sink = start_sink();
my $bport = $sink->port;

# --- backend down
{
	my $dead = free_port();
	my $p = proxy_for('down', $dead, "timeout { connect = 5; shutdown = 5; }\n");
	my $c = smtp_connect($p->port);
	my $r = $c->read_reply(20);
	is($r->{raw}, "421 4.3.0 $H Service not available, backend unreachable\r\n",
	    'backend down: 421 4.3.0 backend unreachable as the greeting');
	ok($c->wait_closed(10), 'backend down: then the connection is closed');
	$c->close;
	$p->stop_ok('backend-down proxy exits 0');
}

# --- backend connection lost (it hangs up at RCPT without replying)
{
	my $s = start_sink(name => 'lost', args => ['-q', 'RCPT']);
	my $p = proxy_for('lost', $s->port);
	my $c = ehlo_client($p->port);
	reply_ok($c->cmd('MAIL FROM:<a@client.test>'), 250, undef, 'lost: MAIL before the backend goes');
	my $r = $c->cmd('RCPT TO:<b@example.test>');
	is($r->{raw}, "421 4.3.0 $H Service not available, lost connection to backend\r\n",
	    'lost: 421 4.3.0 lost connection to backend');
	ok($c->wait_closed(10), 'lost: then the connection is closed');
	$c->close;
	$p->stop_ok('lost-backend proxy exits 0');
}

# --- backend silent too long
{
	my $s = start_sink(name => 'silent', args => ['-W', 'RCPT:60']);
	my $p = proxy_for('silent', $s->port, "timeout { backend = 2; shutdown = 5; }\n");
	my $c = ehlo_client($p->port);
	$c->cmd('MAIL FROM:<a@client.test>');
	my $r = $c->cmd_send('RCPT TO:<b@example.test>') && $c->read_reply(30);
	is($r->{raw}, "421 4.4.2 $H Error: backend timeout\r\n", 'backend silent past timeout.backend: 421 4.4.2');
	ok($c->wait_closed(10), 'backend timeout: then the connection is closed');
	$c->close;
	$p->stop_ok('silent-backend proxy exits 0');
	$s->stop;
}

# --- client idle too long
{
	my $p = proxy_for('idle', $bport, "timeout { command = 2; shutdown = 5; }\n");
	my $c = ehlo_client($p->port);
	my $r = $c->read_reply(30);
	is($r->{raw}, "421 4.4.2 $H Error: timeout exceeded\r\n", 'client idle past timeout.command: 421 4.4.2');
	ok($c->wait_closed(10), 'idle: then the connection is closed');
	$c->close;
	$p->stop_ok('idle proxy exits 0');
}

# --- client silent inside DATA past timeout.data
{
	my $p = proxy_for('idle-data', $bport, "timeout { command = 30; data = 2; shutdown = 5; }\n");
	my $c = ehlo_client($p->port);
	my $r = $c->begin_data(from => 'slow@client.test', to => 'x@example.test');
	reply_ok($r->{data}, 354, undef, 'idle in DATA: DATA accepted');
	$c->send("Subject: stalled in data\r\n\r\nsome of it\r\n");
	my $x = $c->read_reply(30);
	is($x->{raw}, "421 4.4.2 $H Error: timeout exceeded\r\n", 'client silent past timeout.data: 421 4.4.2');
	ok($c->wait_closed(10), 'idle in DATA: then the connection is closed');
	$c->close;
	my $d = ehlo_client($p->port);
	$d->send_mail(from => 'after@client.test', to => 'x@example.test', data => make_message(subject => 'after stalled'));
	$d->quit;
	$sink->wait_find(qr/^Subject: after stalled$/m);
	is(scalar($sink->find(qr/^Subject: stalled in data$/m)), 0, 'the stalled message was not delivered');
	$p->stop_ok('idle-in-DATA proxy exits 0');
}

# --- backend silent after the end of data
{
	my $s = start_sink(name => 'slow-dot', args => ['-W', '.:60']);
	my $p = proxy_for('slow-dot', $s->port, "timeout { backend = 2; shutdown = 5; }\n");
	my $c = ehlo_client($p->port);
	my $r = $c->begin_data(from => 'a@client.test', to => 'b@example.test');
	$c->send(dot_stuff(make_message(subject => 'slow end')) . ".\r\n");
	my $x = $c->read_reply(30);
	is($x->{raw}, "421 4.4.2 $H Error: backend timeout\r\n",
	    'backend silent after the end of data: 421 4.4.2 (never a 250 the backend did not give)');
	ok($c->wait_closed(10), 'then the connection is closed');
	$c->close;
	$p->stop_ok('slow-backend proxy exits 0');
	$s->stop;
}

my $p = proxy_for('main', $bport, <<'EOF');
limits { max_recipients = 3; max_message_size = 20000; max_line_length = 512; }
ehlo { size = 10000; remove = [ "DSN", "8BITMIME" ]; }
timeout { shutdown = 5; }
EOF
my $port = $p->port;

# --- client drops inside DATA: nothing delivered
{
	my $c = ehlo_client($port);
	my $r = $c->begin_data(from => 'drop@client.test', to => 'x@example.test');
	reply_ok($r->{data}, 354, undef, 'DATA before the drop');
	$c->send("Subject: half a message\r\n\r\nfirst part\r\n" . ('z' x 5000) . "\r\n");
	# Make sure the proxy has read it (it would answer a NOOP only after
	# the data, so nothing to wait for: a short bounded pause is all).
	select(undef, undef, undef, 0.5);
	$c->close;
	# A clean message afterwards, on another connection; once it is there,
	# the dropped one would have been too.
	my $d = ehlo_client($port);
	my $ok = $d->send_mail(from => 'after@client.test', to => 'x@example.test',
	    data => make_message(subject => 'after the drop'));
	reply_ok($ok->{end}, 250, undef, 'a message after the dropped one is accepted');
	$d->quit;
	ok($sink->wait_find(qr/^Subject: after the drop$/m), 'and delivered');
	is(scalar($sink->find(qr/half a message/)), 0, 'client dropped mid-DATA: nothing delivered');
	my $dots = grep { $_ eq '.' } $sink->commands;
	is($dots, scalar($sink->files), 'the backend got an end of data only for completed messages');
}

# --- command line length
{
	my $c = ehlo_client($port);
	my $max = 'NOOP ' . ('x' x (512 - 5 - 2));
	is(length("$max\r\n"), 512, '(a 512-octet command line)');
	reply_ok($c->cmd($max), 250, undef, 'a command line of exactly 512 octets is relayed');
	my $r = $c->cmd($max . 'y');
	is($r->{raw}, "500 5.5.2 Error: command line too long\r\n", '513 octets: 500 5.5.2 command line too long');
	reply_ok($c->cmd('NOOP'), 250, undef, 'the session goes on');
	$r = $c->cmd('MAIL FROM:<' . ('z' x 20000) . '@client.test>');
	reply_ok($r, 500, '5.5.2', 'a 20000-octet line: 500 5.5.2');
	my $r2 = $c->cmd('NOOP');
	reply_ok($r2, 250, undef, 'only one reply for it, and the session goes on');
	$c->quit;
	ok(!(grep { /y$/ || /zzzz/ } $sink->commands), 'the over-long lines never reached the backend');
}

# --- SIZE
{
	my $c = ehlo_client($port);
	my $e = $c->ehlo('client.test');
	ok((grep { $_ eq 'SIZE 10000' } ehlo_keywords($e)), 'SIZE 10000 advertised') or diag($e->{raw});
	reply_ok($c->cmd('MAIL FROM:<big@client.test> SIZE=10001'), 552, '5.3.4', 'MAIL SIZE= over the cap: 552 5.3.4');
	reply_ok($c->cmd('MAIL FROM:<ok@client.test> SIZE=9999'), 250, undef, 'MAIL SIZE= under the cap: accepted');
	reply_ok($c->cmd('RSET'), 250, undef, 'RSET');
	$c->quit;
}

# --- message over the limit (limits.max_message_size = 20000)
{
	my $c = ehlo_client($port);
	my $big = make_message(subject => 'too big', body => join('', map { ('y' x 70) . "\r\n" } 1 .. 400));
	ok(length($big) > 20000, '(a message of ' . length($big) . ' octets)');
	my $r = $c->send_mail(from => 'big@client.test', to => 'x@example.test', data => $big);
	reply_ok($r->{data}, 354, undef, 'DATA for the big message');
	is($r->{end}{raw}, "552 5.3.4 Error: message size exceeds fixed limit\r\n",
	    'message over max_message_size: 552 5.3.4 after the end of data');
	ok($c->wait_closed(10), 'then the connection is closed');
	$c->close;
	my $d = ehlo_client($port);
	$d->send_mail(from => 'after@client.test', to => 'x@example.test', data => make_message(subject => 'after big'));
	$d->quit;
	$sink->wait_find(qr/^Subject: after big$/m);
	is(scalar($sink->find(qr/^Subject: too big$/m)), 0, 'the big message was not delivered');
}

# --- too many recipients (limits.max_recipients = 3)
{
	my $c = ehlo_client($port);
	my $msg = make_message(subject => 'three recipients');
	my $r = $c->send_mail(from => 'many@client.test', to => [map { "r$_\@example.test" } 1 .. 5], data => $msg);
	is_deeply([map { $_->{code} } @{ $r->{rcpt} }], [250, 250, 250, 452, 452], 'recipients 4 and 5 refused');
	is($r->{rcpt}[3]{raw}, "452 4.5.3 Error: too many recipients\r\n", 'with 452 4.5.3 too many recipients');
	reply_ok($r->{end}, 250, undef, 'the message goes to the first three');
	$c->quit;
	my ($m) = $sink->wait_find(qr/^Subject: three recipients$/m);
	is_deeply($m && $m->{rcpt}, [map { "<r$_\@example.test>" } 1 .. 3], 'the backend got exactly three RCPTs');
}

# --- parameters of extensions not offered: 555 5.5.4
{
	my $c = ehlo_client($port);
	my @cases = (
		['MAIL FROM:<u@client.test> SMTPUTF8', 'SMTPUTF8', 'SMTPUTF8 (the sink does not offer it)'],
		['MAIL FROM:<u@client.test> BODY=8BITMIME', 'BODY', 'BODY=8BITMIME with 8BITMIME removed'],
		['MAIL FROM:<u@client.test> RET=HDRS', 'RET', 'RET= with DSN removed'],
		['MAIL FROM:<u@client.test> ENVID=abc', 'ENVID', 'ENVID= with DSN removed'],
	);
	for my $case (@cases) {
		my ($cmd, $name, $what) = @$case;
		my $r = $c->cmd($cmd);
		reply_ok($r, 555, '5.5.4', "$what: 555 5.5.4");
		like($r->{raw}, qr/^555 5\.5\.4 Error: unsupported parameter \Q$name\E\r\n\z/i, "$what: names $name");
	}
	reply_ok($c->cmd('MAIL FROM:<u@client.test>'), 250, undef, 'plain MAIL is fine');
	for my $case (['RCPT TO:<v@example.test> NOTIFY=SUCCESS', 'NOTIFY'],
	    ['RCPT TO:<v@example.test> ORCPT=rfc822;v@example.test', 'ORCPT']) {
		my ($cmd, $name) = @$case;
		my $r = $c->cmd($cmd);
		reply_ok($r, 555, '5.5.4', "RCPT $name= with DSN removed: 555 5.5.4");
	}
	my $r = $c->cmd("MAIL FROM:<j\xc3\xbcrgen\@client.test>");
	ok($r->{code} && $r->{code} >= 500, 'a UTF-8 address without SMTPUTF8 is refused')
	    or diag(SmtpChainTest::Client::describe($r));
	$c->quit;
	ok(!(grep { /SMTPUTF8|BODY=|RET=|ENVID=|NOTIFY=|ORCPT=|rgen\@/ } $sink->commands),
	    'none of the refused commands reached the backend');
}

# --- commands the proxy never relays: 502 5.5.1
{
	my $c = ehlo_client($port);
	for my $cmd ('ATRN', 'TURN', 'XCLIENT ADDR=192.0.2.1', 'XFORWARD ADDR=192.0.2.1', 'STARTTLS',
	    'AUTH PLAIN AGFsaWNlAHNlY3JldA==', 'BDAT 10 LAST') {
		my $r = $c->cmd($cmd);
		if ($cmd =~ /^AUTH/) {	# the backend offers AUTH, but only inside TLS (auth_requires_tls)
			like($r->{raw}, qr/^538 5\.7\.11 /, "$cmd: 538 5.7.11 before TLS");
			next;
		}
		is($r->{raw}, "502 5.5.1 Error: command not implemented\r\n", "$cmd: 502 5.5.1");
	}
	reply_ok($c->cmd('NOOP'), 250, undef, 'the session goes on');
	$c->quit;
	my @bad = grep { /^(?:ATRN|TURN|XCLIENT ADDR=192|XFORWARD ADDR=192|STARTTLS|AUTH|BDAT)/ } $sink->commands;
	is_deeply(\@bad, [], 'none of them reached the backend') or diag(join("\n", @bad));
}

# --- too many connections
{
	# Two workers: limits.max_connections counts across processes (connlimit.c).
	my $lp = proxy_for('maxconn', $bport, "workers = 2;\nlimits { max_connections = 2; }\ntimeout { shutdown = 5; }\n");
	my @c = map { my $c = smtp_connect($lp->port); $c->read_reply; $c } 1 .. 2;
	my $x = smtp_connect($lp->port);
	my $r = $x->read_reply;
	is($r->{raw}, "421 4.7.0 $H Error: too many connections\r\n", 'a third connection: 421 4.7.0');
	ok($x->wait_closed(10), 'and it is closed');
	$_->quit for @c;
	# Once the others are gone there is room again (bounded retries: the
	# proxy notices the closes asynchronously).
	my $again;
	SmtpChainTest::wait_until(sub {
		my $y = smtp_connect($lp->port) or return 0;
		$again = $y->read_reply;
		$y->close;
		return $again->{code} && $again->{code} == 220;
	}, 10, 0.2);
	reply_ok($again, 220, undef, 'after the others quit, a new connection gets the greeting');
	$lp->stop_ok('max_connections proxy exits 0');
}

# --- SIGTERM: an idle session gets 421 4.3.2, the daemon exits 0
{
	my $sp = proxy_for('shutdown', $bport, "timeout { shutdown = 10; }\n");
	my $c = ehlo_client($sp->port);
	kill 'TERM', $sp->pid;
	my $r = $c->read_reply(15);
	reply_ok($r, 421, '4.3.2', 'SIGTERM: an idle session is told 421 4.3.2');
	ok($c->wait_closed(10), 'and closed');
	$sp->wait_exit(20);
	$sp->stop_ok('and the daemon exits 0 by itself');
	ok(!smtp_connect($sp->port), 'nothing listens any more');
}

# --- SIGTERM inside a transaction: it finishes, then 421 4.3.2
{
	my $sp = proxy_for('shutdown-mail', $bport, "timeout { shutdown = 20; }\n");
	my $c = ehlo_client($sp->port);
	reply_ok($c->cmd('MAIL FROM:<late@client.test>'), 250, undef, 'in a transaction when SIGTERM comes');
	kill 'TERM', $sp->pid;
	# The listener goes first: wait (bounded) until new connections fail.
	ok(SmtpChainTest::wait_until(sub { my $x = smtp_connect($sp->port, connect_timeout => 2); !$x }, 10),
	    'SIGTERM: no new connections are accepted');
	reply_ok($c->cmd('RCPT TO:<late@example.test>'), 250, undef, 'the transaction goes on: RCPT');
	reply_ok($c->cmd('DATA'), 354, undef, 'DATA');
	$c->send(dot_stuff(make_message(subject => 'finished during shutdown')) . ".\r\n");
	reply_ok($c->read_reply, 250, undef, 'the message is accepted');
	my $n = $c->cmd('NOOP');
	reply_ok($n, 421, '4.3.2', 'the next command gets 421 4.3.2');
	ok($c->wait_closed(10), 'and the connection is closed');
	$c->close;
	$sp->wait_exit(30);
	$sp->stop_ok('the daemon exits 0 once the session is done');
	ok($sink->wait_find(qr/^Subject: finished during shutdown$/m), 'the message finished during shutdown was delivered');
}

$p->stop_ok;
done_testing;
