# 91-hostile.t - hostile clients get a clear SMTP error or a timeout, and
# the other sessions keep working.
#
# Already covered elsewhere: bare CR/LF in commands and data (30), command
# lines of 513 and 20,000 octets, unsupported parameters, UTF-8 addresses
# without SMTPUTF8 (40).  Here: NUL and 8-bit bytes in commands, a 10 MB
# command line and one that never ends, a million RCPTs (limits.
# max_recipients answers 452, only the first ones reach the backend), a
# client dripping one byte a second (timeout.command bounds a whole command
# line, not the pause between bytes), pipelining floods (one read
# everything, one never reads: the proxy must stop reading rather than
# queue replies without bound), and unbalanced BDAT sizes.  While each
# attack runs, another session relays a message: asserted by its replies
# and its delivery, never by timing.
use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);
use SmtpChainTest;
use SmtpChainFaults;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $sink = start_sink(verbose => 1);
my $MAXRCPT = 100;
my $proxy = start_proxy(<<"EOF", name => 'proxy');
backend = "127.0.0.1:@{[ $sink->port ]}";
limits { max_recipients = $MAXRCPT; max_message_size = 20000000; }
ehlo { add = [ "CHUNKING" ]; }
timeout { command = 3; data = 3; shutdown = 5; }
EOF
my $port = $proxy->port;
my $ledger = ledger(messages => sub { map { $_->{message} } $sink->messages });

# A client after greeting and EHLO.
sub client {
	my (%o) = @_;
	my $c = smtp_connect($port, %o) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('hostile.test');
	return $c;
}

# Another session relays a message meanwhile.
sub bystander_ok {
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $r = try_message($port, $ledger, prefix => 'bystander');
	reply_ok($r->{end}, 250, undef, "$what: another session relays a message meanwhile");
}

# Write bytes to the client's socket from a child process (so the test can
# read replies while a flood is written); returns the child's pid.
sub writer {
	my ($c, $bytes) = @_;
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		$SIG{ALRM} = sub { _exit(2) };
		alarm(300 * $SmtpChainTest::TIME_SCALE);
		$c->send($bytes) or _exit(1);
		_exit(0);
	}
	return $pid;
}

# --- NUL bytes in commands: 500 5.5.2, never forwarded, the session goes on
{
	my $c = client();
	for my $case (["NOOP\0\r\n", 'NUL after the verb'], ["MAIL FROM:<a\0b\@client.test>\r\n", 'NUL in an address'],
	    ["\0\0\0\0\r\n", 'only NULs'], ["\0MAIL FROM:<nul-start\@client.test>\r\n", 'NUL first']) {
		my ($bytes, $what) = @$case;
		$c->send($bytes);
		reply_ok($c->read_reply, 500, '5.5.2', "$what: 500 5.5.2");
		reply_ok($c->cmd('NOOP'), 250, undef, "$what: the session goes on");
	}
	my $r = $c->send_mail(from => 'after-nul@client.test', to => 'x@example.test',
	    data => make_message(subject => 'after the NULs'));
	reply_ok($r->{end}, 250, undef, 'a message after the NUL commands is relayed');
	$c->quit;
	ok($sink->wait_find(qr/^Subject: after the NULs$/m), 'and delivered');
	ok(!(grep { /\0|nul-start|a.b\@client/ } $sink->commands), 'no command with a NUL reached the backend');
}

# --- 8-bit bytes in commands: a clear reply each, the session goes on
{
	my $c = client();
	my @cases = (
		["MA\xc3\x8fL FROM:<x\@client.test>", 'an 8-bit verb', qr/^5/],
		["MAIL FROM:<j\xf6rg\@client.test>", 'a Latin-1 sender without SMTPUTF8', qr/^5/],
		["MAIL FROM:<ok8\@client.test>", '(a plain MAIL)', qr/^250/],
		["RCPT TO:<\xff\xfe\@example.test>", 'invalid UTF-8 in a recipient', qr/^5/],
		["RCPT TO:<\x80\x81\x82>", 'high bytes only', qr/^5/],
		["NOOP \xe2\x82\xac\xff", 'NOOP with 8-bit text', qr/^[25]/],
		["RSET", '(RSET)', qr/^250/],
		["HELP \xff\xff", 'HELP with 8-bit text', qr/^[25]/],
	);
	for my $case (@cases) {
		my ($line, $what, $want) = @$case;
		my $r = $c->cmd($line);
		like($r->{code} // 'none', $want, "$what: a clear reply ($want)")
		    or diag(SmtpChainTest::Client::describe($r));
		reply_ok($c->cmd('NOOP'), 250, undef, "$what: the session goes on");
	}
	$c->quit;
	ok(!(grep { /j\xf6rg|\xff\xfe|\x80\x81/ } $sink->commands), 'no refused 8-bit address reached the backend');
}

# --- a 10 MB command line: one 500, bounded memory, the session goes on
{
	my $c = client(timeout => 60);
	my $hwm0 = $proxy->vmhwm;
	my $pid = writer($c, 'NOOP ' . ('A' x 10_000_000) . "\r\n");
	my $r = $c->read_reply(60);
	reply_ok($r, 500, '5.5.2', 'a 10 MB command line: 500 5.5.2');
	waitpid($pid, 0);
	is($? >> 8, 0, 'the proxy read all of it');
	reply_ok($c->cmd('NOOP'), 250, undef, 'exactly one reply for it, and the session goes on');
	SKIP: {
		skip 'memory use under a sanitizer or valgrind is not the daemon\'s own', 1 if SmtpChainTest::sanitized();
		my $hwm = $proxy->vmhwm;
		ok(defined $hwm && $hwm - $hwm0 < 4096, "the proxy did not keep the line (VmHWM $hwm0 -> $hwm kB)");
	}
	$c->quit;
}

# --- a command line that never ends: the command timeout closes it
{
	my $c = client();
	$c->send('NOOP ' . ('B' x 2_000_000));
	my $r = $c->read_reply(30);
	is($r->{raw}, "500 5.5.2 Error: command line too long\r\n", 'an endless command line: 500 5.5.2 as soon as it is too long');
	bystander_ok('an endless command line');
	my $t = $c->read_reply(30);
	is($t->{raw}, "421 4.4.2 proxy.test Error: timeout exceeded\r\n", 'then, without its end, the command timeout: 421 4.4.2');
	ok($c->wait_closed(10), 'and the connection is closed');
}

# --- slow drip: one byte a second never makes a command
{
	my $d = smtp_connect($port) or die;
	$d->read_reply;
	my $line = "NOOP dripping\r\n";
	my $sent = 0;
	my $o = smtp_connect($port) or die;
	$o->read_reply;
	my ($tag, $text) = SmtpChainFaults::tagged_message(prefix => 'beside-drip');
	$ledger->tried($tag);
	my @steps = ('EHLO other.test', "MAIL FROM:<o\@client.test>", 'RCPT TO:<o@example.test>', 'DATA',
	    \(SmtpChainTest::dot_stuff($text) . ".\r\n"), 'QUIT');
	my @other;
	my $closed;
	for my $i (1 .. 40) {
		last if $d->{eof};
		if ($sent < length $line) {
			$d->send(substr($line, $sent++, 1)) or last;
		}
		if (@steps) {
			my $st = shift @steps;
			push @other, ref $st ? do { $o->send($$st); $o->read_reply } : $o->cmd($st);
		}
		# Anything from the dripping session? (at most a second's wait)
		my $l = $d->read_line(1 / $SmtpChainTest::TIME_SCALE);	# one real second, also under valgrind
		if (defined $l) { $d->{buf} = $l . $d->{buf}; last }
		last if $d->{eof};
	}
	my $r = $d->read_reply(10);
	# The other session's remaining steps, now that the drip is over.
	for my $st (@steps) {
		push @other, ref $st ? do { $o->send($$st); $o->read_reply } : $o->cmd($st);
	}
	is($r->{raw}, "421 4.4.2 proxy.test Error: timeout exceeded\r\n",
	    "a client dripping one byte a second gets 421 4.4.2 (after $sent of " . length($line) . ' bytes)');
	ok($sent < length $line, 'before its command was complete');
	ok($d->wait_closed(10), 'and is closed');
	is_deeply([map { $_->{code} // 'none' } @other], [250, 250, 250, 354, 250, 221],
	    'another session meanwhile: EHLO, MAIL, RCPT, DATA, the message and QUIT go through');
	$ledger->saw($tag, ($other[4]{code} // 0) == 250 ? 'accepted' : 'refused');
}

# --- a pipelined flood of 20,000 NOOPs: 20,000 replies, in order
{
	my $c = client(timeout => 60);
	my $n = 20_000;
	my $pid = writer($c, "NOOP\r\n" x $n . "RSET\r\n");
	my %codes;
	my $count = 0;
	for (1 .. $n + 1) {
		my $r = $c->read_reply(60);
		last unless $r->{code};
		$codes{$r->{code}}++;
		$count++;
	}
	waitpid($pid, 0);
	is($count, $n + 1, "a flood of $n pipelined NOOPs and an RSET: every one answered");
	is_deeply(\%codes, { 250 => $n + 1 }, 'all with 250');
	reply_ok($c->cmd('NOOP'), 250, undef, 'the session goes on');
	$c->quit;
}

# --- a flood from a client that never reads: the proxy stops reading
{
	my $c = client();
	my $sock = $c->socket;
	$sock->blocking(0);
	my $hwm0 = $proxy->vmhwm;
	my $chunk = "NOOP\r\n" x 10_000;
	my ($pushed, $blocked) = (0, 0);
	my $deadline = time + 20;
	my $cap = 200 << 20;
	while ($pushed < $cap && time < $deadline) {
		my $w = syswrite($sock, $chunk);
		if (!defined $w) {
			die "write: $!\n" unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
			# Blocked: give the proxy time to read more, if it still does.
			$blocked++;
			last if $blocked > 20;
			sleep 0.1;
			next;
		}
		$blocked = 0;
		$pushed += $w;
	}
	ok($pushed < $cap, sprintf('a client that never reads could push only %.1f MB before the proxy stopped reading', $pushed / 1e6));
	bystander_ok('a client flooding without reading');
	SKIP: {
		skip 'memory use under a sanitizer or valgrind is not the daemon\'s own', 1 if SmtpChainTest::sanitized();
		my $hwm = $proxy->vmhwm;
		ok(defined $hwm && $hwm - $hwm0 < 16384, "its replies were not queued without bound (VmHWM $hwm0 -> $hwm kB)");
	}
	$sock->blocking(1);
	$c->close;
	bystander_ok('after the flooding client is gone');
}

# --- a million RCPTs (max_recipients = 100): 452 each past the limit
{
	my $n = $SmtpChainTest::VALGRIND ? 100_000 : 1_000_000;
	# (the flood is built before connecting: timeout.command is 3 s)
	my $rcpts = join('', map { "RCPT TO:<u$_\@example.test>\r\n" } 1 .. $n);
	my $c = client(timeout => 120);
	my $pid = writer($c, "MAIL FROM:<many\@client.test>\r\n" . $rcpts);
	undef $rcpts;
	# Count the replies as they come, without parsing each into a hash.
	my (%codes, $lines, $buf);
	$lines = 0;
	$buf = '';
	my $sock = $c->socket;
	my $sel = IO::Select->new($sock);
	my $deadline = time + 600 * $SmtpChainTest::TIME_SCALE;
	my $bystander_done;
	while ($lines < $n + 1 && time < $deadline) {
		next unless $sel->can_read(1);
		my $r = sysread($sock, my $chunk, 1 << 20);
		last unless $r;
		$buf .= $chunk;
		my $end = rindex($buf, "\n");
		next if $end < 0;
		my $done = substr($buf, 0, $end + 1, '');
		$codes{$1}++ while $done =~ /^(\d{3}) /mg;
		$lines += ($done =~ tr/\n//);
		if (!$bystander_done && $lines > $n / 2) {
			bystander_ok('half way through a million RCPTs');
			$bystander_done = 1;
		}
	}
	waitpid($pid, 0);
	is($lines, $n + 1, "MAIL and $n RCPTs: every one answered");
	is($codes{250}, 1 + $MAXRCPT, "250 for MAIL and the first $MAXRCPT");
	is($codes{452}, $n - $MAXRCPT, "452 for the other " . ($n - $MAXRCPT));
	ok($bystander_done, 'the bystander ran in the middle');
	$c->{buf} = '';
	reply_ok($c->cmd('DATA'), 354, undef, 'DATA after them');
	$c->send(dot_stuff(make_message(subject => 'a million rcpts')) . ".\r\n");
	reply_ok($c->read_reply(60), 250, undef, 'the message is accepted');
	$c->quit;
	my ($m) = $sink->wait_find(qr/^Subject: a million rcpts$/m, 30);
	is($m && scalar @{ $m->{rcpt} }, $MAXRCPT, "it went to the first $MAXRCPT recipients only");
}

# --- unbalanced BDAT sizes
{
	# A chunk announced longer than what comes: the data timeout ends it.
	my $c = client();
	$c->cmd('MAIL FROM:<bdat-short@client.test>');
	$c->cmd('RCPT TO:<x@example.test>');
	$c->send("BDAT 100 LAST\r\nSubject: bdat short\r\n\r\nonly fifty bytes or so\r\n");
	my $r = $c->read_reply(30);
	is($r->{raw}, "421 4.4.2 proxy.test Error: timeout exceeded\r\n", 'BDAT 100 with fewer octets: the data timeout, 421 4.4.2');
	ok($c->wait_closed(10), 'and the connection is closed');

	# A chunk followed by more octets than announced: they are a command
	# line.  smtp-sink has no CHUNKING, so the proxy turned the chunk into
	# DATA at the backend: a line between chunks cannot go there.
	$c = client();
	$c->cmd('MAIL FROM:<bdat-long@client.test>');
	$c->cmd('RCPT TO:<x@example.test>');
	$c->send("BDAT 10\r\n0123456789GARBAGE GARBAGE\r\n");
	reply_ok($c->read_reply, 250, undef, 'BDAT 10: its ten octets are a chunk');
	my $g = $c->read_reply;
	ok($g->{code} && $g->{code} >= 400, 'the octets past the chunk are a command line, refused')
	    or diag(SmtpChainTest::Client::describe($g));
	$c->close;

	# NOOP between converted chunks is answered, the message goes on.
	$c = client();
	$c->cmd('MAIL FROM:<bdat-noop@client.test>');
	$c->cmd('RCPT TO:<x@example.test>');
	my $m = make_message(subject => 'bdat with noop');
	my $half = int(length($m) / 2);
	$c->send("BDAT $half\r\n" . substr($m, 0, $half));
	reply_ok($c->read_reply, 250, undef, 'a first chunk');
	reply_ok($c->cmd('NOOP'), 250, undef, 'NOOP between chunks');
	$c->send('BDAT ' . (length($m) - $half) . " LAST\r\n" . substr($m, $half));
	reply_ok($c->read_reply, 250, undef, 'the last chunk: the message is accepted');
	$c->quit;
	ok($sink->wait_find(qr/^Subject: bdat with noop$/m), 'and delivered');

	# Chunk sizes that are no number: the octets after them cannot be told
	# from commands, so the session ends with a 5xx.
	for my $bad ('BDAT', 'BDAT abc', 'BDAT -5', 'BDAT 1 2 3', 'BDAT 99999999999999999999999 LAST',
	    'BDAT 18446744073709551616', 'BDAT 10 FIRST') {
		$c = client();
		$c->cmd('MAIL FROM:<bdat-bad@client.test>');
		$c->cmd('RCPT TO:<x@example.test>');
		my $x = $c->cmd($bad);
		ok($x->{code} && $x->{code} =~ /^5/, "'$bad': a 5xx") or diag(SmtpChainTest::Client::describe($x));
		$c->close;
	}
	$c = client();
	$c->cmd('MAIL FROM:<bdat-big@client.test>');
	$c->cmd('RCPT TO:<x@example.test>');
	my $pid = writer($c, "BDAT 30000000 LAST\r\n" . ('y' x 30_000_000));
	my $big = $c->read_reply(120);
	waitpid($pid, 0);
	like($big->{raw} // '', qr/^552 5\.3\.4 /, 'BDAT over max_message_size: 552 5.3.4 at once')
	    or diag(SmtpChainTest::Client::describe($big));
	$c->close;

	# A count that makes octets-so-far + count wrap (2^64-1 after a first
	# chunk): refused at once, not read.
	for my $huge ('18446744073709551615', '18446744073709551615 LAST', '18446744073709551000 LAST') {
		$c = client();
		$c->cmd('MAIL FROM:<bdat-wrap@client.test>');
		$c->cmd('RCPT TO:<x@example.test>');
		$c->send("BDAT 1000\r\n" . ('z' x 998) . "\r\n");
		reply_ok($c->read_reply, 250, undef, "BDAT $huge after a chunk: the first chunk");
		reply_ok($c->cmd("BDAT $huge"), 552, '5.3.4', "BDAT $huge after a chunk: 552 5.3.4 at once");
		ok($c->wait_closed(5), "BDAT $huge: and the session ends");
		$c->close;
	}
	bystander_ok('unbalanced BDAT');
	is(scalar($sink->find(qr/bdat short|0123456789/)), 0, 'no unbalanced chunk was delivered');
}

# --- a held message (a filter holds it in the spool) cannot pass
# max_message_size in the spool: chunks that fit go in, one that cannot fit
# (2^64-1 after a first chunk, which used to wrap the sum) gets 552 before
# an octet of it is stored.
SKIP: {
	my $TF = ($ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir()) . '/t/modules/.libs/testfilter.so';
	skip "$TF is not built (make check builds it)", 8 unless -f $TF;
	my $spool = SmtpChainTest::tmpdir() . '/spool';
	mkdir $spool;
	my $limit = 1048576;
	my $held = start_proxy(<<"EOF", name => 'held');
backend = "127.0.0.1:@{[ $sink->port ]}";
workers = 1;
spool_dir = "$spool";
limits { max_message_size = $limit; spool_memory = 4kb; }
ehlo { add = [ "CHUNKING" ]; }
timeout { command = 300; data = 300; shutdown = 5; }
filter { module = "$TF"; tag = "held"; }
EOF
	# The bytes of the spool files the worker holds open (unlinked).
	my $spooled = sub {
		my $sum = 0;
		for my $w ($held->worker_pids) {
			my $t = SmtpChainTest::fd_targets($w);
			for my $fd (keys %$t) {
				next unless $t->{$fd} =~ /^\Q$spool\E\//;
				$sum += (stat("/proc/$w/fd/$fd"))[7] // 0;
			}
		}
		return $sum;
	};
	my $c = smtp_connect($held->port) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('hostile.test');
	$c->cmd('MAIL FROM:<held-wrap@client.test>');
	$c->cmd('RCPT TO:<x@example.test>');
	my $first = 1_000_000;
	$c->send("BDAT $first\r\n" . substr("Subject: held wrap\r\n\r\n" . ('w' x 998 . "\r\n") x 1001, 0, $first));
	reply_ok($c->read_reply, 250, undef, 'held: a first chunk of 1,000,000 octets');
	my $before = $spooled->();
	ok($before > 0 && $before <= $limit, "held: the spool holds it ($before octets)");
	my $pid = writer($c, "BDAT 18446744073709551615 LAST\r\n" . ('v' x 20_000_000));
	my $r = $c->read_reply(20);
	reply_ok($r, 552, '5.3.4', 'held: BDAT 2^64-1 LAST after it: 552 5.3.4 at once');
	waitpid($pid, 0);
	my $after = $spooled->();
	ok($c->wait_closed(10), 'held: and the session ends');
	$c->close;
	ok($after <= $limit, "held: the spool never passes the limit ($after octets after 20 MB more were sent)");
	diag("held message: spool $before octets after the first chunk, $after after the 2^64-1 chunk");
	is(scalar($sink->find(qr/^Subject: held wrap/m)), 0, 'held: nothing delivered');
	$held->stop_ok('the holding proxy exits 0');
}

$ledger->check('hostile input bystanders');
$proxy->stop_ok;
done_testing();
