# 70-milter.t - the milter module with a libmilter milter (t/milter/testmilter):
# every milter action checked on what the sink received and what the client
# was told; unknown commands; connection reuse (SMFIC_QUIT_NC); the same
# changes as behind a real Postfix; protocol flags and macro lists; two
# milters in one chain; and a milter that hangs, one that exits mid-message,
# one that is not there.
#
# testmilter chooses its actions by the words of the Subject and adds a trace
# header "X-Testmilter-NAME: ..." with what it saw (see its header comment).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
my $testmilter = "$build/t/milter/testmilter";
plan skip_all => "$module is not built" unless -f $module;
plan skip_all => "$testmilter is not built" unless -x $testmilter;

our $TODO;
my $HELD_CRLF = 'daemon bug: a message held after DATA gets an extra CRLF at its end';

my $dir = tmpdir();
my $qdir = "$dir/quarantine";
mkdir $qdir;

# Start testmilter NAME with extra arguments; waits until it listens.
sub start_milter {
	my ($name, @args) = @_;
	my $port = ref $args[0] eq 'HASH' ? shift(@args)->{port} : free_port();
	my $log = "$dir/milter-$name.log";
	my $pid = SmtpChainTest::spawn(argv => [$testmilter, '-p', "inet:$port\@127.0.0.1",
	    '-n', $name, @args], output => $log);
	SmtpChainTest::on_cleanup("testmilter $name", sub { SmtpChainTest::stop_pid($pid, 'KILL', 5) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	die "testmilter $name did not come up: " . (slurp($log) // '') . "\n"
	    unless SmtpChainTest::port_listening($port);
	return { name => $name, port => $port, pid => $pid, log => $log };
}

sub milter_log { slurp($_[0]{log}) // '' }

# A filter {} block for the milter module; timeout_NAME options go into a
# timeout { NAME = ...; } block, unless _flat asks for the older spelling.
sub milter_block {
	my ($socket, %opt) = @_;
	my $t = "filter {\n\tmodule = \"$module\";\n\tsocket = \"$socket\";\n";
	my $flat = delete $opt{_flat};
	my @tk = $flat ? () : grep { /^timeout_/ } sort keys %opt;
	$t .= "\ttimeout { " . join(' ', map { (my $k = $_) =~ s/^timeout_//; "$k = $opt{$_};" } @tk) . " }\n"
	    if @tk;
	delete @opt{@tk};
	$t .= "\t$_ = $opt{$_};\n" for sort keys %opt;
	return $t . "}\n";
}

# A proxy in front of the sink with these filter blocks: one worker, so
# that sessions in sequence share its idle milter connections (each worker
# process has its own), and the fake milter below, which serves one
# connection at a time, is not left waiting on another worker's.
sub proxy_with {
	my ($name, @blocks) = @_;
	my $sport = $main::sink->port;
	return start_proxy(qq{backend = "127.0.0.1:$sport";\nquarantine_dir = "$qdir";\nworkers = 1;\n} .
	    qq{log { level = "debug"; }\ntimeout { shutdown = 5; }\n} . join('', @blocks),
	    name => $name);
}

my $seq = 0;

# A message whose Subject is the keywords plus a unique tag; returns (tag, text).
sub message {
	my ($words, %o) = @_;
	my $tag = sprintf('m%d-%d', $$, ++$seq);
	my $extra = $o{headers} // "X-Change-Me: original\r\nX-Delete-Me: delete me\r\n";
	my $body = $o{body} // "Hello.\r\nSecond line.\r\n";
	my $text = "From: <sender\@client.test>\r\nTo: <rcpt\@example.test>\r\n" .
	    "Subject: $words $tag\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n$extra\r\n$body";
	return ($tag, $text);
}

# One session: greeting, EHLO, the transaction, QUIT.  Returns the
# begin_data/send_mail hash plus greeting.
sub transact {
	my ($port, %o) = @_;
	my $c = smtp_connect($port, timeout => $o{timeout} || 20) or die "connect: $@\n";
	my %r;
	$r{greeting} = $c->read_reply;
	if (!$r{greeting}{code} || $r{greeting}{code} != 220) {
		$c->close;
		return \%r;
	}
	$r{ehlo} = $c->ehlo($o{helo} || 'client.test');
	my $s = $c->send_mail(from => $o{from} || 'sender@client.test',
	    to => $o{to} || ['rcpt@example.test'], data => $o{data});
	%r = (%r, %$s);
	$c->quit unless $o{keep};
	$r{client} = $c;
	return \%r;
}

# The delivered message with this tag (waits a little), or undef.
sub delivered {
	my ($tag, $timeout) = @_;
	my @m = $main::sink->wait_find(qr/\Q$tag\E/, $timeout // 10);
	return $m[0];
}

# Whether no message with this tag reached the sink (after a short wait).
sub not_delivered {
	my ($tag) = @_;
	my @m = $main::sink->wait_find(qr/\Q$tag\E/, 2);
	return !@m;
}

# The headers of a delivered message as [name, value] (unfolded), in order.
sub headers_of {
	my ($m) = @_;
	my ($head) = split /\n\n/, $m->{message}, 2;
	$head =~ s/\n[ \t]+/ /g;
	return map { /^([^:]+):\s?(.*)$/ ? [$1, $2] : () } split /\n/, $head;
}

# The body compared; the host's known extra CRLF is a TODO, not a failure here.
sub body_is {
	my ($m, $want, $name) = @_;
	my $got = $m ? body_of($m) : undef;
	local $TODO = $HELD_CRLF if defined $got && $got eq "$want\n";
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return is($got, $want, $name);
}

sub body_of {
	my ($m) = @_;
	my (undef, $body) = split /\n\n/, $m->{message}, 2;
	return $body // '';
}

# The trace header a milter named NAME added, as a hash.
sub trace_of {
	my ($m, $name) = @_;
	my ($h) = grep { $_->[0] eq "X-Testmilter-$name" } headers_of($m);
	return undef unless $h;
	return { map { split /=/, $_, 2 } split / /, $h->[1] };
}

our $sink = start_sink();

my $one = start_milter('one');
my $p = proxy_with('one', milter_block("inet:127.0.0.1:$one->{port}",
    timeout_eom => 4, timeout_command => 4));

# --- a plain message: through, with what the milter saw
{
	my ($tag, $data) = message('plain');
	my $r = transact($p->port, data => $data, helo => 'client.test');
	reply_ok($r->{greeting}, 220, undef, 'plain: greeting after the milter answered CONNECT');
	reply_ok($r->{end}, 250, undef, 'plain: 250 at end of data');
	my $m = delivered($tag);
	ok($m, 'plain: delivered');
	my $t = $m && trace_of($m, 'one');
	ok($t, 'plain: the trace header is there');
	$t ||= {};
	is($t->{helo}, 'client.test', 'plain: the milter saw HELO');
	is($t->{from}, '<sender@client.test>', 'plain: MAIL with angle brackets');
	is($t->{rcpts}, 1, 'plain: one RCPT');
	is($t->{headers}, 7, 'plain: all 7 headers');
	is($t->{lead}, 'no', 'plain: header values without their leading space');
	{
		my $want = length("Hello.\r\nSecond line.\r\n");
		local $TODO = $HELD_CRLF if ($t->{body} // 0) == $want + 2;
		is($t->{body}, $want, 'plain: the body, CRLF line ends');
	}
	is($t->{client_addr}, '127.0.0.1', 'plain: {client_addr} macro');
	is($t->{j}, 'proxy.test', 'plain: j macro is our hostname');
	like($t->{i} // '', qr/^[0-9A-F]+\.1$/, 'plain: i macro (the message\'s id: session id, message number)');
	my ($sid) = ($t->{i} // '') =~ /^([0-9A-F]+)\./;
	like($p->log_text, qr/^.*\Q$sid\E: msgid=\Q$t->{i}\E client=.*status=sent/m,
	    'plain: i is the msgid of the summary line') if $sid;
	is($t->{mail_addr}, 'sender@client.test', 'plain: {mail_addr} macro');
	is($t->{rcpt_addr}, 'rcpt@example.test', 'plain: {rcpt_addr} macro');
	body_is($m, "Hello.\nSecond line.\n", 'plain: body unchanged');
}

# --- several messages in one session: each its own {i}, as on its summary line
{
	my $c = smtp_connect($p->port, timeout => 20) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	my (@i, @tags);
	for my $n (1 .. 3) {
		my ($tag, $data) = message('plain');
		push @tags, $tag;
		reply_ok($c->send_mail(from => 'sender@client.test', to => ['rcpt@example.test'],
		    data => $data)->{end}, 250, undef, "three messages: 250 for message $n");
		reply_ok($c->cmd('RSET'), 250, undef, "three messages: RSET after message $n") if $n == 2;
	}
	$c->quit;
	for my $tag (@tags) {
		my $m = delivered($tag);
		push @i, ($m && trace_of($m, 'one') || {})->{i} // '-';
	}
	my ($sid) = $i[0] =~ /^([0-9A-F]+)\.\d+$/;
	ok($sid, "three messages: the first i is SESSION.N ($i[0])");
	$sid //= 'none';
	is_deeply(\@i, ["$sid.1", "$sid.2", "$sid.3"], 'three messages: one session, i numbered 1, 2, 3');
	for my $i (@i) {
		like($p->log_text, qr/^.*\Q$sid\E: msgid=\Q$i\E client=.*status=sent/m,
		    "three messages: the summary line of $i says msgid=$i");
	}
}

# --- an unknown command: SMFIC_UNKNOWN before the backend answers it
{
	my $c = smtp_connect($p->port, timeout => 20);
	reply_ok($c->read_reply, 220, undef, 'unknown: greeting');
	$c->ehlo('client.test');
	my $r = $c->cmd('XYZZY MILTER-REJECT now');
	reply_ok($r, 550, '5.7.1', 'unknown: the milter\'s REJECT reaches the client');
	like($r->{raw} // '', qr/^550 5\.7\.1 testmilter: unknown command refused\r\n\z/,
	    'unknown: with the milter\'s text');
	$r = $c->cmd('XYZZY MILTER-TEMPFAIL');
	reply_ok($r, 451, '4.7.1', 'unknown: the milter\'s TEMPFAIL reaches the client');
	$r = $c->cmd('XYZZY plain');
	reply_ok($r, 500, undef, 'unknown: CONTINUE, so the backend answers (smtp-sink: 500)');
	my ($tag, $data) = message('plain');
	$r = $c->send_mail(from => 'sender@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($r->{end}, 250, undef, 'unknown: a transaction after them is fine');
	$c->quit;
	ok(delivered($tag), 'unknown: that message is delivered');
	my $ml = milter_log($one);
	like($ml, qr/^one: unknown XYZZY MILTER-REJECT now$/m, 'unknown: the milter got the whole line');
	like($ml, qr/^one: unknown XYZZY plain$/m, 'unknown: every unknown command goes to the milter');
	my $sl = slurp($sink->{log}) // '';
	unlike($sl, qr/MILTER-REJECT|MILTER-TEMPFAIL/, 'unknown: refused lines never reach the backend');
	like($sl, qr/XYZZY plain/, 'unknown: an accepted line is relayed');
	like($p->log_text, qr/filter milter: reject at unknown command: 550 5\.7\.1 testmilter: unknown command refused/,
	    'unknown: the refusal is logged');
}

# --- an unknown command inside a transaction (between RCPT and DATA)
# MAIL, RCPT, the unknown verb (the sink answers 500), then DATA with a
# message; returns the replies (unknown, end) and the tag.
sub unknown_in_transaction {
	my ($port, $words) = @_;
	my $c = smtp_connect($port, timeout => 60);
	my %r;
	$c->read_reply;
	$c->ehlo('client.test');
	$r{mail} = $c->cmd('MAIL FROM:<sender@client.test>');
	$r{rcpt} = $c->cmd('RCPT TO:<rcpt@example.test>');
	$r{unknown} = $c->cmd('XYZZY in-transaction');
	my ($tag, $data) = message($words);
	$r{data} = $c->cmd('DATA');
	$c->send(dot_stuff($data) . ".\r\n");
	$r{end} = $c->read_reply;
	$c->quit;
	return ($tag, \%r);
}
{
	# A milter that takes DATA: libmilter goes from UNKNOWN to DATA, then headers.
	my ($tag, $r) = unknown_in_transaction($p->port, 'addheader');
	reply_ok($r->{unknown}, 500, undef, 'unknown in a transaction: CONTINUE, the backend answers');
	reply_ok($r->{end}, 250, undef, 'unknown in a transaction: 250 at end of data');
	my $m = delivered($tag);
	ok($m && grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m)),
	    'unknown in a transaction: delivered with the milter\'s change');
	is($m && trace_of($m, 'one')->{headers}, 7, 'unknown in a transaction: the milter saw every header');
	like(milter_log($one), qr/^one: unknown XYZZY in-transaction$/m,
	    'unknown in a transaction: the milter got it');
}
{
	# A milter that asked not to see DATA (SMFIP_NODATA): libmilter's state
	# table takes no HEADER, EOH or BODYEOB right after UNKNOWN; it would
	# ignore the first header (no reply) until timeout.content.  So the
	# module sends no SMFIC_UNKNOWN inside a transaction to such a milter.
	my $nd = start_milter('nodata', '-P', 'nodata');
	my $pn = proxy_with('nodata', milter_block("inet:127.0.0.1:$nd->{port}", timeout_content => 15,
	    timeout_eom => 15));
	my ($tag, $r) = unknown_in_transaction($pn->port, 'addheader');
	reply_ok($r->{unknown}, 500, undef, 'NODATA, unknown in a transaction: the backend answers');
	reply_ok($r->{end}, 250, undef, 'NODATA, unknown in a transaction: 250 at end of data');
	my $m = delivered($tag);
	ok($m && grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m)),
	    'NODATA, unknown in a transaction: delivered with the milter\'s change');
	my $t = $m ? trace_of($m, 'nodata') : {};
	is($t->{headers}, 7, 'NODATA, unknown in a transaction: the milter saw every header');
	unlike(milter_log($nd), qr/unknown XYZZY in-transaction/,
	    'NODATA: the unknown command inside the transaction was not sent');
	unlike($pn->log_text, qr/for the rest of the session/, 'NODATA: no milter failure logged');
	# Outside a transaction it still goes to the milter.
	my $c = smtp_connect($pn->port, timeout => 20);
	$c->read_reply;
	$c->ehlo('client.test');
	reply_ok($c->cmd('XYZZY MILTER-REJECT outside'), 550, '5.7.1',
	    'NODATA: an unknown command outside a transaction still goes to the milter');
	$c->quit;
	$pn->stop_ok('nodata proxy exits 0');
}

# --- header changes
{
	my ($tag, $data) = message('addheader insheader chgheader delheader');
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'headers: 250');
	my $m = delivered($tag);
	my @h = $m ? headers_of($m) : ();
	is($h[0][0], 'X-Milter-Inserted', 'insheader: the inserted header comes first');
	is($h[0][1], 'inserted by one', 'insheader: its value (leading space given back)');
	like($m->{message} // '', qr/^X-Milter-Inserted: inserted by one\n/, 'insheader: exactly one space after the colon');
	my ($added) = grep { $_->[0] eq 'X-Milter-Added' } @h;
	is($added && $added->[1], 'added by one', 'addheader: appended');
	ok((grep { $_->[0] eq 'X-Milter-Added' } @h) && $h[-1][0] eq 'X-Testmilter-one'
	    && $h[-2][0] eq 'X-Milter-Added', 'addheader: at the end, before the trace added after it');
	my ($chg) = grep { $_->[0] eq 'X-Change-Me' } @h;
	is($chg && $chg->[1], 'changed by one', 'chgheader: value changed');
	ok(!grep({ $_->[0] eq 'X-Delete-Me' } @h), 'delheader: header removed');
	body_is($m, "Hello.\nSecond line.\n", 'header changes: body unchanged');
}

# --- envelope changes
{
	my ($tag, $data) = message('chgfrom addrcpt addrcpt_par delrcpt');
	my $r = transact($p->port, data => $data, to => ['rcpt@example.test', 'gone@example.org']);
	reply_ok($r->{end}, 250, undef, 'envelope: 250');
	my $m = delivered($tag);
	is($m && $m->{mail}, '<changed@example.org>', 'chgfrom: the sink got the new sender');
	my @rcpt = $m ? map { (split / /, $_)[0] } @{ $m->{rcpt} } : ();
	ok(grep({ $_ eq '<added@example.org>' } @rcpt), 'addrcpt: recipient added');
	my ($par) = $m ? grep { /added-par/ } @{ $m->{rcpt} } : ();
	like($par // '', qr/^<added-par\@example\.org> NOTIFY=NEVER$/, 'addrcpt_par: added with its parameter');
	ok(!grep({ $_ eq '<gone@example.org>' } @rcpt), 'delrcpt: recipient removed');
	ok(grep({ $_ eq '<rcpt@example.test>' } @rcpt), 'the other recipient stays');
}

# --- body replacement
{
	my ($tag, $data) = message('replbody');
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'replbody: 250');
	my $m = delivered($tag);
	body_is($m, "Body replaced by one.\nSecond chunk.\n", 'replbody: the new body, both chunks');
	ok($m && trace_of($m, 'one'), 'replbody: headers kept, trace added');
}

# --- verdicts at end of message
{
	my ($tag, $data) = message('reject');
	my $r = transact($p->port, data => $data);
	is($r->{end}{raw}, "550 5.7.1 Command rejected\r\n", 'reject: Postfix\'s and sendmail\'s default reply');
	ok(not_delivered($tag), 'reject: not delivered');
}
{
	my ($tag, $data) = message('tempfail');
	my $r = transact($p->port, data => $data);
	is($r->{end}{raw}, "451 4.7.1 Service unavailable - try again later\r\n", 'tempfail: Postfix\'s and sendmail\'s default reply');
	ok(not_delivered($tag), 'tempfail: not delivered');
}
{
	my ($tag, $data) = message('replycode');
	my $r = transact($p->port, data => $data);
	is($r->{end}{raw}, "550-5.7.1 testmilter: first line\r\n550 5.7.1 testmilter: second line\r\n",
	    'replycode: the milter\'s multi-line reply, as it set it');
	ok(not_delivered($tag), 'replycode: not delivered');
}
{
	my ($tag, $data) = message('discard');
	my $r = transact($p->port, data => $data);
	is($r->{end}{raw} // '', "250 2.0.0 Ok: queued as " . ($r->{end}{text} =~ /queued as (\S+)$/ ? $1 : '?') . "\r\n",
	    'discard: 250 "Ok: queued as MSGID" to the client, as for a relayed message (Postfix)');
	my ($id) = ($r->{end}{text} // '') =~ /queued as ([0-9A-F]+\.\d+)$/;
	ok($id, 'discard: the id is SESSIONID.N');
	ok(not_delivered($tag), 'discard: not delivered');
	like($p->wait_log(qr/(msgid=\S+ [^\n]*status=discarded[^\n]*)/) // '', qr/msgid=\Q${\($id \/\/ '?')}\E .* status=discarded filter=\S+ reply="250 2\.0\.0 Ok: queued as \Q${\($id \/\/ '?')}\E"/,
	    'discard: the truth in the log (status=discarded)');
}
{
	my ($tag, $data) = message('quarantine');
	my $before = () = glob("$qdir/*");
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, '2.0.0', 'quarantine: 250 to the client');
	my ($id) = ($r->{end}{text} // '') =~ /Ok: queued as ([0-9A-F]+\.\d+)$/;
	ok($id, 'quarantine: "Ok: queued as MSGID", as for a relayed message (Postfix)');
	ok($id && glob("$qdir/$id.*.eml"), 'quarantine: the file is named after the message\'s id');
	like($p->wait_log(qr/(status=quarantined [^\n]*)/) // '', qr/reply="250 2\.0\.0 Ok: queued as \Q${\($id \/\/ '?')}\E"/,
	    'quarantine: the truth in the log (status=quarantined)');
	ok(not_delivered($tag), 'quarantine: not delivered');
	my @q = glob("$qdir/*");
	is(scalar(@q), $before + 1, 'quarantine: one file in quarantine_dir');
	like(join('', map { slurp($_) // '' } @q), qr/\Q$tag\E/, 'quarantine: the message is in it');
	like($p->log_text, qr/quarantine: quarantined by one/, 'quarantine: the reason is logged');
}
{
	my ($tag, $data) = message('accept addheader');
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'accept: 250');
	my $m = delivered($tag);
	ok($m && grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m)), 'accept: delivered with the changes made before it');
}
{
	# 4 s of work with SMFIR_PROGRESS every second, over a 4 s eom timeout.
	my ($tag, $data) = message('progress');
	my $t0 = time;
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'progress: 250 after more than the eom timeout');
	ok(time - $t0 >= 3.5, 'progress: the milter took its time');
	ok(delivered($tag), 'progress: delivered');
}
{
	# A 200 KB body: SMFIR_SKIP after the first chunk; the body is relayed whole.
	my $body = join('', map { sprintf("line %06d of a long body, to make several chunks\r\n", $_) } 1 .. 4000);
	my ($tag, $data) = message('skip', body => $body);
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'skip: 250');
	my $m = delivered($tag);
	my $t = $m ? trace_of($m, 'one') : {};
	is($t->{chunks}, 1, 'skip: the milter got one body chunk');
	is($t->{body}, 65535, 'skip: of MILTER_CHUNK_SIZE octets');
	body_is($m, to_lf($body), 'skip: the whole body relayed');
}
{
	# Big body without skip: chunks of at most 65535 octets, all of it.
	my $body = 'x' x 70 . "\r\n";
	$body x= 3000;
	my ($tag, $data) = message('bigbody', body => $body);
	my $r = transact($p->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'big body: 250');
	my $m = delivered($tag);
	my $t = $m ? trace_of($m, 'one') : {};
	{
		local $TODO = $HELD_CRLF if ($t->{body} // 0) == length($body) + 2;
		is($t->{body}, length($body), 'big body: the milter got every octet');
	}
	# The host hands 64 KiB pieces (3 x 65536 + 19392): each full one goes
	# out as 65535 + 1 octets, MILTER_CHUNK_SIZE being the most.
	is($t->{chunks}, 7, 'big body: in chunks of at most 65535 octets');
}

# --- envelope refusals
{
	my ($tag, $data) = message('rcptcheck');
	my $r = transact($p->port, data => $data,
	    to => ['milter-reject@example.test', 'rcpt@example.test', 'milter-tempfail@example.test']);
	is($r->{rcpt}[0]{raw}, "550 5.7.1 testmilter: recipient refused\r\n", 'rcpt reject: that recipient refused with the milter\'s text');
	reply_ok($r->{rcpt}[1], 250, undef, 'rcpt reject: the next recipient accepted');
	is($r->{rcpt}[2]{raw}, "451 4.7.1 testmilter: recipient temporarily refused\r\n", 'rcpt tempfail: 451 for that one');
	reply_ok($r->{end}, 250, undef, 'rcpt reject: the message goes through');
	my $m = delivered($tag);
	is_deeply($m ? $m->{rcpt} : [], ['<rcpt@example.test>'], 'rcpt reject: only the accepted recipient');
	is($m && trace_of($m, 'one')->{rcpts}, 1, 'rcpt reject: the milter counted one');
}
{
	my $c = smtp_connect($p->port);
	$c->read_reply;
	$c->ehlo('client.test');
	my $r = $c->cmd('MAIL FROM:<milter-reject@client.test>');
	is($r->{raw}, "550 5.7.1 testmilter: sender refused\r\n", 'mail reject: 550 with the milter\'s text');
	$r = $c->cmd('MAIL FROM:<milter-tempfail@client.test>');
	is($r->{raw}, "451 4.7.1 testmilter: sender temporarily refused\r\n", 'mail tempfail: 451');
	my ($tag, $data) = message('aftermail');
	my $s = $c->send_mail(from => 'sender@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($s->{end}, 250, undef, 'after a refused MAIL the next transaction works');
	ok(delivered($tag), 'and is delivered');
	$r = $c->cmd('HELO milter-reject.test');
	is($r->{raw}, "550 5.7.1 testmilter: helo refused\r\n", 'helo reject: 550');
	$c->quit;
}
{
	# RSET inside a transaction: the milter gets SMFIC_ABORT.
	my $before = () = milter_log($one) =~ /: abort$/mg;
	my $c = smtp_connect($p->port);
	$c->read_reply;
	$c->ehlo('client.test');
	reply_ok($c->cmd('MAIL FROM:<a@client.test>'), 250, undef, 'rset: MAIL');
	reply_ok($c->cmd('RCPT TO:<b@example.test>'), 250, undef, 'rset: RCPT');
	reply_ok($c->cmd('RSET'), 250, undef, 'rset: RSET');
	my ($tag, $data) = message('afterrset');
	my $s = $c->send_mail(from => 'c@client.test', to => 'd@example.test', data => $data);
	reply_ok($s->{end}, 250, undef, 'rset: the next transaction');
	$c->quit;
	my $m = delivered($tag);
	is($m && trace_of($m, 'one')->{from}, '<c@client.test>', 'rset: the milter saw the new sender');
	my $after = wait_until(sub { my $n = () = milter_log($one) =~ /: abort$/mg; $n > $before }, 5);
	ok($after, 'rset: the milter got SMFIC_ABORT');
}
{
	# Several messages in one session, each with its own changes.
	my $c = smtp_connect($p->port);
	$c->read_reply;
	$c->ehlo('client.test');
	my @tags;
	for my $w ('addheader', 'plain', 'replbody') {
		my ($tag, $data) = message($w);
		push @tags, $tag;
		my $s = $c->send_mail(from => 'sender@client.test', to => 'rcpt@example.test', data => $data);
		reply_ok($s->{end}, 250, undef, "session: message '$w' accepted");
	}
	$c->quit;
	my @m = map { delivered($_) } @tags;
	ok($m[0] && grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m[0])), 'session: first message changed');
	ok($m[1] && !grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m[1])), 'session: second one not');
	body_is($m[2], "Body replaced by one.\nSecond chunk.\n", 'session: third one\'s body replaced');
}
$p->stop_ok('proxy with one milter exits 0');

# --- connection reuse: SMFIC_QUIT_NC, then SMFIC_CONNECT on the same connection
{
	my $ru = start_milter('reuse');
	my $pr = proxy_with('reuse', milter_block("inet:127.0.0.1:$ru->{port}", idle_connections => 2));
	my $count = sub { my ($what) = @_; my $n = () = milter_log($ru) =~ /^reuse: $what\b/mg; $n };
	my @tags;
	for my $i (1, 2) {
		my ($tag, $data) = message('plain');
		push @tags, $tag;
		my $r = transact($pr->port, data => $data, helo => "client$i.test",
		    to => [map { "rcpt$_\@example.test" } 1 .. $i]);
		reply_ok($r->{end}, 250, undef, "reuse: session $i delivered");
		wait_until(sub { $count->('close') >= $i }, 5);
	}
	is($count->('negotiate'), 1, 'reuse: two sessions, one SMFIC_OPTNEG (one milter connection)');
	is($count->('connect'), 2, 'reuse: SMFIC_CONNECT for each session');
	is($count->('close'), 2, 'reuse: xxfi_close at each SMFIC_QUIT_NC');
	my $t2 = trace_of(delivered($tags[1]) || {}, 'reuse') || {};
	is($t2->{helo}, 'client2.test', 'reuse: the second session\'s HELO, not the first one\'s');
	is($t2->{rcpts}, 2, 'reuse: the second session\'s recipients only');
	is($t2->{client_addr}, '127.0.0.1', 'reuse: connect macros sent again');
	like($pr->log_text, qr/SMFIC_QUIT_NC, connection kept for a later session \(1 idle\)/,
	    'reuse: logged when kept');
	like($pr->log_text, qr/an idle connection used again/, 'reuse: logged when used again');

	# A message the milter ACCEPTs leaves libmilter where QUIT_NC is ignored: QUIT, closed.
	my ($tag, $data) = message('accept');
	my $r = transact($pr->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'reuse: an accepted message');
	($tag, $data) = message('plain');
	$r = transact($pr->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'reuse: the next session');
	ok(delivered($tag), 'reuse: ... delivered');
	wait_until(sub { $count->('connect') >= 4 }, 5);
	is($count->('negotiate'), 2, 'reuse: no QUIT_NC after SMFIR_ACCEPT at eom: a new connection next time');

	# The milter goes away while its connection is idle: dropped, a new one next time.
	SmtpChainTest::stop_pid($ru->{pid}, 'KILL', 5);
	my $again = start_milter('reuse2', { port => $ru->{port} });
	($tag, $data) = message('plain');
	$r = transact($pr->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'reuse: after the milter restarted, the message goes through');
	my $t = trace_of(delivered($tag) || {}, 'reuse2') || {};
	is($t->{helo}, 'client.test', 'reuse: ... through the new milter');
	like(milter_log($again), qr/^reuse2: negotiate /m, 'reuse: ... on a new connection');
	unlike($pr->log_text, qr/milter inet:127\.0\.0\.1:$ru->{port}: .*for the rest of the session/,
	    'reuse: no failure logged');
	$pr->stop_ok('reuse proxy exits 0 (idle connections do not hold it)');
}

# The receive queue of our end of a TCP connection to 127.0.0.1:PORT
# (/proc/net/tcp), or undef when there is none established.
sub rx_queue_to {
	my ($port) = @_;
	my $want = sprintf('0100007F:%04X', $port);
	open(my $fh, '<', '/proc/net/tcp') or return undef;
	while (<$fh>) {
		my @f = split ' ';
		next unless @f > 4 && $f[2] eq $want && $f[3] eq '01';
		my (undef, $rx) = split /:/, $f[4];
		return hex $rx;
	}
	return undef;
}

# --- an idle connection the milter closed, seen only when a session takes it
# A milter with SMFIP_NOCONNECT: nothing waits for a reply at connect, so a
# dead idle connection would only fail at HELO (default_action).  The
# worker is stopped while the backend's greeting (which starts the
# session's connect step: the backend's EHLO reply is remembered from the
# first session, no prelude) and then the milter's close wait in its
# sockets, in that order: on SIGCONT both come in one loop iteration, the
# session first.  The module must see the close when it takes the
# connection (a peek at the socket) and open a new one.
{
	my $nc = start_milter('noconn', '-P', 'noconnect');
	my $slow = start_sink(name => 'slowgreet', args => ['-W', 'connect:2']);
	my $sport = $slow->port;
	my $pr = start_proxy(qq{backend = "127.0.0.1:$sport";\nworkers = 1;\n} .
	    qq{log { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
	    milter_block("inet:127.0.0.1:$nc->{port}", idle_connections => 2), name => 'noconn');
	my ($tag, $data) = message('plain');
	my $r = transact($pr->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'dead idle (NOCONNECT): the first session');
	ok(wait_until(sub { $pr->log_text =~ /connection kept for a later session/ }, 10),
	    'dead idle: its milter connection is kept');
	my ($worker) = $pr->worker_pids;
	my $connects = sub { my $n = () = $slow->log_text =~ /smtp-sink: connect /g; $n };
	my $before = $connects->();
	my $c = smtp_connect($pr->port, timeout => 60);
	ok(wait_until(sub { $connects->() > $before }, 10), 'dead idle: the proxy connected to the backend');
	kill 'STOP', $worker;
	my $queued = eval { wait_until(sub { (rx_queue_to($sport) // 0) > 0 }, 10) };
	SmtpChainTest::stop_pid($nc->{pid}, 'KILL', 5);
	my $again = eval { start_milter('noconn2', { port => $nc->{port} }, '-P', 'noconnect') };
	kill 'CONT', $worker;
	ok($queued, 'dead idle: the backend\'s greeting waited while the worker was stopped');
	ok($again, 'dead idle: a new milter on the same port') or diag($@);
	reply_ok($c->read_reply, 220, undef, 'dead idle: greeting');
	$c->ehlo('client.test');
	($tag, $data) = message('plain');
	my $s = $c->send_mail(from => 'sender@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($s->{mail}, 250, undef, 'dead idle: MAIL is not refused (no default_action)');
	reply_ok($s->{end}, 250, undef, 'dead idle: the message is accepted');
	$c->quit;
	my @m = $slow->wait_find(qr/\Q$tag\E/, 10);
	ok($m[0] && trace_of($m[0], 'noconn2'), 'dead idle: delivered through the new milter');
	ok(wait_until(sub { $pr->log_text =~ /an idle connection was closed by the milter .*dropped/ }, 60),
	    'dead idle: the dead connection was seen when taken') or diag($pr->log_tail);
	unlike($pr->log_text, qr/for the rest of the session/, 'dead idle: no milter failure logged');
	$pr->stop_ok('dead-idle proxy exits 0');
}

# --- the same message through a real Postfix with the same milter: the same changes
# (twice: every change; and headers inserted at indexes 1 and 2 alone, which
# behind Postfix count its Received: as header 0, so they land just below it)
SKIP: {
	skip 'a private Postfix needs root', 20 unless $> == 0;
	my $same = start_milter('same');
	my $pp = proxy_with('same', milter_block("inet:127.0.0.1:$same->{port}"));
	my $pf = start_postfix(relay_port => $sink->port, name => 'postfix-same',
	    main => "smtpd_milters = inet:127.0.0.1:$same->{port}\n" .
		"milter_default_action = tempfail\nmilter_protocol = 6\n");
	for my $words ('addheader insheader insheader2 chgheader delheader replbody chgfrom addrcpt delrcpt',
	    'insheader2') {
		my %got;
		for my $via (['proxy', $pp->port], ['postfix', $pf->port]) {
			my ($name, $port) = @$via;
			my ($tag, $data) = message($words);
			my $r = transact($port, data => $data, to => ['rcpt@example.test', 'gone@example.org']);
			reply_ok($r->{end}, 250, undef, "same changes ($words): 250 through $name");
			my @m = $sink->wait_find(qr/\Q$tag\E/, 30);
			ok(@m, "same changes ($words): delivered through $name")
			    or diag($name eq 'postfix' ? $pf->maillog : '');
			next unless @m;
			my $m = $m[0];
			(my $text = $m->{message}) =~ s/\Q$tag\E/TAG/g;
			# The Received: of the MTA in front of the sink: on top through
			# Postfix; through the proxy the sink is the backend and adds none.
			my @h = grep { $_->[0] !~ /^(?:Received|X-Testmilter-same)$/ } headers_of({ message => $text });
			my $t = trace_of($m, 'same') || {};
			$got{$name} = {
				headers => [map { "$_->[0]: $_->[1]" } @h],
				body => body_of($m),
				from => ($m->{mail} // '') =~ /^(<[^>]*>)/ ? $1 : $m->{mail},
				rcpt => [sort map { /^(<[^>]*>)/ ? $1 : $_ } map { @{ $_->{rcpt} } } @m],
				seen => join(' ', map { "$_=" . ($t->{$_} // '-') } qw(from rcpts lead body chunks xh)),
			};
		}
		for my $k (qw(headers body from rcpt seen)) {
			is_deeply($got{proxy}{$k}, $got{postfix}{$k}, "same changes ($words): $k as through Postfix")
			    or diag(explain($got{proxy}{$k}), explain($got{postfix}{$k}));
		}
		is($got{proxy}{from}, '<changed@example.org>', 'same changes: the sender was changed')
		    if $words =~ /chgfrom/;
	}
	$pf->stop;
	$pp->stop_ok('same-changes proxy exits 0');
}

# --- protocol flags and macro lists
{
	my $f = start_milter('flags', '-P', 'nohdrs,nr_body,nr_rcpt,nounknown', '-M', 'connect={client_addr}');
	my $lead = start_milter('lead', '-P', 'leadspc,nr_hdr,nobody,nr_rcpt,nr_unkn');
	my $pf = proxy_with('flags', milter_block("inet:$f->{port}\@127.0.0.1", timeout_eom => 4),
	    milter_block("inet6:[::ffff:127.0.0.1]:$lead->{port}", timeout_eom => 4));
	my ($tag, $data) = message('flags', body => "a\r\n" x 30000);
	my $r = transact($pf->port, data => $data, to => ['rcpt@example.test', 'milter-reject@example.test']);
	reply_ok($r->{rcpt}[1], 250, undef, 'NR_RCPT: the recipient is not waited for (no refusal)');
	reply_ok($r->{end}, 250, undef, 'flags: 250');
	my $m = delivered($tag);
	my $t = $m ? trace_of($m, 'flags') : {};
	is($t->{headers}, 0, 'NOHDRS: no header sent');
	{
		local $TODO = $HELD_CRLF if ($t->{body} // 0) == 90002;
		is($t->{body}, 90000, 'NR_BODY: the whole body, without waiting');
	}
	is($t->{j}, '-', 'SETSYMLIST: only the macros the milter asked for at connect');
	is($t->{client_addr}, '127.0.0.1', 'SETSYMLIST: the one it asked for is there');
	my $l = $m ? trace_of($m, 'lead') : {};
	is($l->{lead}, 'yes', 'HDR_LEADSPC: the value with its leading space');
	is($l->{headers}, 8, 'NR_HDR: every header (the first milter\'s trace too)');
	is($l->{body}, 0, 'NOBODY: no body sent');
	like($l->{xh} // '', qr/X-Testmilter-flags/, 'the second milter sees the first one\'s header');
	# The module passes the value as the milter sent it (no space added);
	# the host puts one space after the colon of a value that has none.
	like($m->{message} // '', qr/^X-Testmilter-lead: ?helo=/m, 'HDR_LEADSPC: no second space added to a new header');
	my $c = smtp_connect($pf->port, timeout => 20);
	$c->read_reply;
	$c->ehlo('client.test');
	reply_ok($c->cmd('XYZZY MILTER-REJECT'), 500, undef,
	    'NOUNKNOWN and NR_UNKN: the unknown command goes to the backend (smtp-sink: 500)');
	$c->quit;
	wait_until(sub { milter_log($lead) =~ /unknown XYZZY/ }, 5);
	like(milter_log($lead), qr/^lead: unknown XYZZY MILTER-REJECT$/m, 'NR_UNKN: the milter got it');
	unlike(milter_log($f), qr/unknown/, 'NOUNKNOWN: the milter did not');
	$pf->stop_ok('flags proxy exits 0');
}

# --- two milters: the second sees the first one's changes
{
	my $a = start_milter('first');
	my $b = start_milter('second');
	my $p2 = proxy_with('two', milter_block("inet:127.0.0.1:$a->{port}"),
	    milter_block("inet:127.0.0.1:$b->{port}"));
	my ($tag, $data) = message('insheader replbody chgfrom');
	my $r = transact($p2->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'two milters: 250');
	my $m = delivered($tag);
	my $t2 = $m ? trace_of($m, 'second') : {};
	my $t1 = $m ? trace_of($m, 'first') : {};
	is($t2->{headers}, $t1->{headers} + 2, 'two milters: the second saw the first\'s two new headers');
	like($t2->{xh} // '', qr/X-Milter-Inserted.*X-Testmilter-first/, 'two milters: by name, in order');
	is($t2->{body}, length("Body replaced by first.\r\nSecond chunk.\r\n"), 'two milters: the second saw the first\'s body');
	body_is($m, "Body replaced by second.\nSecond chunk.\n", 'two milters: the last body wins');
	my @ins = $m ? grep { $_->[0] eq 'X-Milter-Inserted' } headers_of($m) : ();
	is_deeply([map { $_->[1] } @ins], ['inserted by second', 'inserted by first'], 'two milters: both inserted, the second one first');
	$p2->stop_ok('two-milter proxy exits 0');
}

# --- failures
{
	# A milter that hangs at end of message: timeout, 4xx, a clear log line.
	my $h = start_milter('hang');
	my $ph = proxy_with('hang', milter_block("inet:127.0.0.1:$h->{port}", timeout_eom => 2, _flat => 1));
	my ($tag, $data) = message('hang');
	my $t0 = time;
	my $r = transact($ph->port, data => $data, keep => 1);
	my $took = time - $t0;
	reply_ok($r->{end}, 451, '4.7.1', 'hang: 451 4.7.1 at end of data');
	# Which timeout fired is in the log line below; only a lower bound on the time here
	# (an upper one would be a timing assertion on a loaded machine).
	ok($took >= 1.5, sprintf('hang: not before the 2 s eom timeout (%.1f s)', $took));
	like($ph->log_text, qr/milter inet:127\.0\.0\.1:$h->{port}: no reply to SMFIC_BODYEOB within 2 s; tempfail for the rest of the session/,
	    'hang: one clear log line');
	my $c = $r->{client};
	my $again = $c->cmd('MAIL FROM:<a@client.test>');
	reply_ok($again, 451, '4.7.1', 'hang: the next MAIL of the session gets 451 too');
	$c->quit;
	ok(not_delivered($tag), 'hang: not delivered (the client keeps it)');
	my ($tag2, $data2) = message('plain');
	my $r2 = transact($ph->port, data => $data2);
	reply_ok($r2->{end}, 250, undef, 'hang: a new session talks to the milter again');
	ok(delivered($tag2), 'hang: and its message is delivered');
	$ph->stop_ok('hang proxy exits 0');
}
{
	my $h = start_milter('hangconn', '-f', 'hang:connect');
	my $ph = proxy_with('hangconn', milter_block("inet:127.0.0.1:$h->{port}", timeout_command => 2,
	    default_action => '"accept"'));
	my ($tag, $data) = message('plain');
	my $r = transact($ph->port, data => $data);
	reply_ok($r->{greeting}, 220, undef, 'hang at connect, default_action accept: greeting after the timeout');
	reply_ok($r->{end}, 250, undef, 'hang at connect: the message goes through');
	my $m = delivered($tag);
	ok($m && !trace_of($m, 'hangconn'), 'hang at connect: delivered without the milter');
	like($ph->log_text, qr/no reply to SMFIC_CONNECT within 2 s; accept for the rest of the session/,
	    'hang at connect: logged');
	$ph->stop_ok('hang-at-connect proxy exits 0');
}
{
	# A milter that hangs in the body: the content timeout (header, eoh, body), not eom's.
	my $h = start_milter('hangbody', '-f', 'hang:body');
	my $ph = proxy_with('hangbody', milter_block("inet:127.0.0.1:$h->{port}", timeout_content => 2,
	    timeout_eom => 60, timeout_command => 60));
	my ($tag, $data) = message('plain');
	my $r = transact($ph->port, data => $data);
	reply_ok($r->{end}, 451, '4.7.1', 'hang in the body: 451 4.7.1');
	like($ph->log_text, qr/no reply to SMFIC_BODY within 2 s; tempfail for the rest of the session/,
	    'hang in the body: logged with the content timeout');
	ok(not_delivered($tag), 'hang in the body: not delivered (the client keeps it)');
	$ph->stop_ok('hang-in-body proxy exits 0');
}
{
	# A milter that exits in the middle of the body.
	my $x = start_milter('exit');
	my $px = proxy_with('exit', milter_block("inet:127.0.0.1:$x->{port}"));
	my ($tag, $data) = message('exit');
	my $r = transact($px->port, data => $data);
	reply_ok($r->{end}, 451, '4.7.1', 'exit: 451 4.7.1');
	ok(not_delivered($tag), 'exit: not delivered');
	like($px->log_text, qr/milter inet:127\.0\.0\.1:$x->{port}: the milter closed the connection instead of replying; tempfail/,
	    'exit: logged');
	$px->stop_ok('exit proxy exits 0');
}
{
	# Nobody listening: default tempfail (as Postfix: 220, EHLO, then 451 at
	# MAIL), shutdown (421 at connect), accept, reject, quarantine.
	my $dead = free_port();
	my $pd = proxy_with('dead', milter_block("inet:127.0.0.1:$dead", timeout_connect => 2));
	my $c = smtp_connect($pd->port);
	my $g = $c->read_reply;
	reply_ok($g, 220, undef, 'no milter, tempfail: greeted (a health check sees the node up)');
	reply_ok($c->ehlo('client.test'), 250, undef, 'no milter, tempfail: EHLO accepted');
	is($c->cmd('MAIL FROM:<a@client.test>')->{raw}, "451 4.7.1 Service unavailable - try again later\r\n",
	    'no milter, tempfail: MAIL gets Postfix\'s 451 4.7.1');
	reply_ok($c->cmd('NOOP'), 250, undef, 'no milter, tempfail: the session goes on');
	$c->quit;
	like($pd->log_text, qr/milter inet:127\.0\.0\.1:$dead: cannot connect: connection refused; tempfail for the rest of the session/,
	    'no milter: logged');
	$pd->stop_ok('dead-milter proxy exits 0');

	my $ps = proxy_with('deadshut', milter_block("inet:127.0.0.1:$dead", default_action => '"shutdown"'));
	$c = smtp_connect($ps->port);
	reply_ok($c->read_reply, 421, '4.7.0', 'no milter, shutdown: 421 instead of the greeting');
	$c->close;
	$ps->stop_ok('dead-milter (shutdown) proxy exits 0');

	my $pa = proxy_with('deadaccept', milter_block("inet:127.0.0.1:$dead", default_action => '"accept"'));
	my ($tag, $data) = message('addheader');
	my $r = transact($pa->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'no milter, accept: 250');
	my $m = delivered($tag);
	ok($m && !grep({ $_->[0] eq 'X-Milter-Added' } headers_of($m)), 'no milter, accept: delivered unchanged');
	$pa->stop_ok('dead-milter (accept) proxy exits 0');

	my $pr = proxy_with('deadreject', milter_block("inet:127.0.0.1:$dead", default_action => '"reject"'));
	$c = smtp_connect($pr->port);
	$g = $c->read_reply;
	reply_ok($g, 554, '5.7.1', 'no milter, reject: 554 at connect');
	$c->close;
	$pr->stop_ok('dead-milter (reject) proxy exits 0');

	my $pq = proxy_with('deadquar', milter_block("unix:$dir/nothing.sock", default_action => '"quarantine"'));
	($tag, $data) = message('plain');
	my $before = () = glob("$qdir/*");
	$r = transact($pq->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'no milter (unix socket), quarantine: 250');
	like($r->{end}{text} // '', qr/Ok: queued as [0-9A-F]+\.\d+$/, 'no milter, quarantine: "queued as MSGID"');
	my $after = () = glob("$qdir/*");
	is($after, $before + 1, 'no milter, quarantine: in quarantine_dir');
	$pq->stop_ok('dead-milter (quarantine) proxy exits 0');
}
{
	# default_action reject with a milter that exits at RCPT.
	my $x = start_milter('exitrcpt', '-f', 'exit:rcpt');
	my $px = proxy_with('exitrcpt', milter_block("inet:127.0.0.1:$x->{port}", default_action => '"reject"'));
	my ($tag, $data) = message('plain');
	my $r = transact($px->port, data => $data);
	reply_ok($r->{rcpt}[0], 550, '5.7.1', 'exit at RCPT, default reject: the recipient gets 550 5.7.1');
	ok(!$r->{end}, 'exit at RCPT: no DATA without recipients');
	$px->stop_ok('exit-at-rcpt proxy exits 0');
}

# --- a milter that breaks the protocol (a fake written here)
#
# It answers SMFIC_OPTNEG with version, actions and protocol as asked, every
# other command with SMFIR_CONTINUE, except what the sender's local part
# asks for (see fake_reply); it logs each command it gets, one line each:
# the command letter, then the data with NUL as '|' and CR, LF as \r, \n
# (SMFIC_OPTNEG's in hex, a body chunk's as its length).
use IO::Socket::IP;
use POSIX ();

# A milter packet.
sub pkt { my ($cmd, $data) = @_; $data //= ''; return pack('N', 1 + length $data) . $cmd . $data }

# What the fake answers to one command, given the sender's local part.
sub fake_reply {
	my ($mode, $cmd, $data, $st) = @_;
	if ($cmd eq 'M') {
		($st->{mode}) = $data =~ /^<([^@>]*)/;
		$st->{body} = 0;
		$mode = $st->{mode} // '';
		return pkt('4') if $mode eq 'shutdown';
		return pkt('y', "250 2.0.0 not a refusal\0") if $mode eq 'badcode';
		return pkt('y', "451-4.7.1 first line\r\n451 4.7.1 second line\0") if $mode eq 'multi';
		return pkt('y', "550 5.7.1 100%% sure\0") if $mode eq 'percent';
	}
	if ($cmd eq 'R') {
		return pkt('f') if $mode eq 'connfail' && $data =~ /^<fail\@/;
		return "\xff\xff\xff\xff" if $mode eq 'garbage';
		return pkt('h', "X-Early\0no\0") . pkt('c') if $mode eq 'modearly';
		return pkt('Z') if $mode eq 'unknown';
		return pkt('c') . pkt('c') if $mode eq 'twice';
	}
	if ($cmd eq 'B' && $mode eq 'skipbody') {
		return $st->{body}++ ? pkt('c') : pkt('s');
	}
	if ($cmd eq 'E') {
		if ($mode eq 'eomstuff') {
			return pkt('b', "line one\nline two\r\nline three\n") .
			    pkt('m', pack('N', 0) . "X-Change-Me\0new\n\tfolded\0") .
			    pkt('i', pack('N', 1) . "X-Second\0at index 1\0") .
			    pkt('+', "<plain\@example.org>\0") .
			    pkt('e', "<>\0") . pkt('p') . pkt('c');
		}
		if ($mode eq 'slow') {
			sleep 2;
			return pkt('c');
		}
		return pkt('a') if $mode eq 'shutdownlater';
	}
	return '' if $cmd =~ /^[DAQK]$/;
	return pkt('c');
}

# Start the fake on a free port: version, actions, protocol for its OPTNEG reply.
sub start_fake {
	my ($name, %o) = @_;
	my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 16,
	    ReuseAddr => 1, Proto => 'tcp') or die "fake: $@\n";
	my $port = $srv->sockport;
	my $log = "$dir/fake-$name.log";
	my $pid = fork();
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		$SIG{$_} = 'DEFAULT' for qw(TERM INT ALRM PIPE);
		open(my $lf, '>>', $log) or POSIX::_exit(1);
		$lf->autoflush(1);
		while (my $c = $srv->accept) {
			my %st;
			binmode $c;
			print $lf "connect\n";
			while (1) {
				my $h = '';
				last unless read($c, $h, 4) == 4;
				my $len = unpack('N', $h);
				my $p = '';
				last unless $len >= 1 && read($c, $p, $len) == $len;
				my ($cmd, $data) = (substr($p, 0, 1), substr($p, 1));
				(my $shown = $data) =~ s/\0/|/g;
				$shown =~ s/\r/\\r/g;
				$shown =~ s/\n/\\n/g;
				$shown = 'len=' . length($data) if $cmd eq 'B';
				$shown = unpack('H*', $data) if $cmd eq 'O';
				print $lf "$cmd $shown\n";
				# slow_connect: OPTNEG and CONNECT answered after a while.
				select(undef, undef, undef, $o{slow_connect})
				    if $o{slow_connect} && ($cmd eq 'O' || $cmd eq 'C');
				my $reply = $cmd eq 'O'
				    ? pkt('O', pack('NNN', $o{version} // 6, $o{actions} // 0x1ff, $o{protocol} // 0))
				    : fake_reply($st{mode} // '', $cmd, $data, \%st);
				print $c $reply if length $reply;
				$c->flush;
			}
			print $lf "eof\n";
			close $c;
		}
		POSIX::_exit(0);
	}
	close $srv;
	SmtpChainTest::on_cleanup("fake milter $name", sub { SmtpChainTest::stop_pid($pid, 'KILL', 5) });
	return { name => $name, port => $port, pid => $pid, log => $log };
}

{
	my $fk = start_fake('fake', protocol => 0x400);
	my $pk = proxy_with('fake', milter_block("inet:127.0.0.1:$fk->{port}", timeout_command => 3,
	    timeout_eom => 5));
	my $flog = sub { slurp($fk->{log}) // '' };
	my $session = sub {
		my ($mode, %o) = @_;
		my $c = smtp_connect($pk->port, timeout => 20);
		$c->read_reply;
		$c->ehlo('client.test');
		return $c;
	};

	# What the milter is sent.
	my ($tag, $data) = message('bytes', headers => "X-Folded: one\r\n\ttwo\r\n");
	my $c = $session->();
	my $r = $c->send_mail(from => 'bytes@client.test', to => 'rcpt@example.test',
	    mail_params => 'BODY=8BITMIME', data => $data);
	reply_ok($r->{end}, 250, undef, 'fake: a plain message');
	reply_ok($c->cmd('MAIL FROM:<x@client.test>'), 250, undef, 'fake: MAIL');
	reply_ok($c->cmd('RSET'), 250, undef, 'fake: RSET');
	$c->quit;
	wait_until(sub { $flog->() =~ /^Q/m }, 60);
	my $l = $flog->();
	like($l, qr/^D Cj\|proxy\.test\|.*\|\{client_addr\}\|127\.0\.0\.1\|/m, 'bytes: connect macros');
	like($l, qr/^D C.*\|_\|\S+ \[127\.0\.0\.1\]\|/m, 'bytes: the _ macro is "NAME [ADDR]"');
	# The port is two raw bytes: any value, a newline (port 0x..0A) included,
	# which the fake milter's log shows as \n (and CR as \r).
	like($l, qr/^C [^|]*\|4(?:\\[rn]|[\s\S]){2}127\.0\.0\.1\|$/m,
	    'bytes: CONNECT with family 4, a port and the address');
	like($l, qr/^H client\.test\|$/m, 'bytes: HELO');
	like($l, qr/^M <bytes\@client\.test>\|BODY=8BITMIME\|$/m, 'bytes: MAIL with its parameter as a second string');
	like($l, qr/^D R.*\{rcpt_addr\}\|rcpt\@example\.test\|/m, 'bytes: rcpt macros');
	like($l, qr/^R <rcpt\@example\.test>\|$/m, 'bytes: RCPT');
	like($l, qr/^T $/m, 'bytes: DATA');
	like($l, qr/^L Subject\|bytes \Q$tag\E\|$/m, 'bytes: a header value without its leading space');
	like($l, qr/^L X-Folded\|one\\n\ttwo\|$/m, 'bytes: a folded value with LF, as sendmail sends it');
	like($l, qr/^N $/m, 'bytes: EOH');
	like($l, qr/^D Li\|[0-9A-F]+\.1\|\nL Subject\|/m, 'bytes: each header after the end-of-header macros, as Postfix');
	like($l, qr/^D Bi\|[0-9A-F]+\.1\|\nB len=/m, 'bytes: each body chunk after the end-of-data macros, as Postfix');
	like($l, qr/^D C.*\|\{daemon_addr\}\|127\.0\.0\.1\|/m, 'bytes: {daemon_addr} at connect');
	like($l, qr/^D Ei\|[0-9A-F]+\.1\|\nE $/m, 'bytes: end-of-data macros before BODYEOB');
	like($l, qr/^B len=\d+$/m, 'bytes: BODY');
	like($l, qr/^E $/m, 'bytes: BODYEOB');
	like($l, qr/^M <x\@client\.test>\|\n(?:D [^\n]*\n)*A $/m, 'bytes: SMFIC_ABORT after the RSET');
	like($l, qr/^Q $/m, 'bytes: SMFIC_QUIT at the end of the session');
	is(() = $l =~ /^connect$/mg, 1, 'bytes: one connection so far');

	# SHUTDOWN at MAIL: 421 4.7.0, then the session is closed (as Postfix does).
	$c = $session->();
	$r = $c->cmd('MAIL FROM:<shutdown@client.test>');
	reply_ok($r, 421, '4.7.0', 'SMFIR_SHUTDOWN: 421 4.7.0');
	ok($c->wait_closed(10), 'SMFIR_SHUTDOWN: then the proxy closes the connection');
	$c->close;
	like($pk->log_text, qr/SMFIR_SHUTDOWN in reply to SMFIC_MAIL; shutdown for the rest of the session/,
	    'SMFIR_SHUTDOWN: logged');

	# CONN_FAIL at one RCPT: that recipient gets 4xx, the next is fine.
	$c = $session->();
	reply_ok($c->cmd('MAIL FROM:<connfail@client.test>'), 250, undef, 'CONN_FAIL: MAIL');
	reply_ok($c->cmd('RCPT TO:<fail@example.test>'), 451, undef, 'CONN_FAIL: 451 for that recipient');
	reply_ok($c->cmd('RCPT TO:<ok@example.test>'), 250, undef, 'CONN_FAIL: the next recipient is accepted');
	$c->quit;

	# Broken replies: the default action (tempfail) and a clear line each.
	for my $case (['garbage', qr/malformed reply: packet of 4294967295 octets \(limit 1048576\)/],
	    ['modearly', qr/SMFIR_ADDHEADER in reply to SMFIC_RCPT \(only allowed at end of message\)/],
	    ['unknown', qr/malformed reply: unknown reply command 'Z'/],
	    ['badcode', qr/malformed SMFIR_REPLYCODE "250 2\.0\.0 not a refusal"/]) {
		my ($mode, $re) = @$case;
		$c = $session->();
		my $m = $c->cmd("MAIL FROM:<$mode\@client.test>");
		my $rr = $m->{code} && $m->{code} == 250 ? $c->cmd('RCPT TO:<a@example.test>') : $m;
		reply_ok($rr, 451, '4.7.1', "$mode: 451 4.7.1");
		$c->close;
		like($pk->log_text, $re, "$mode: logged");
	}

	# A reply nobody asked for (two answers to RCPT): the next step fails.
	$c = $session->();
	reply_ok($c->cmd('MAIL FROM:<twice@client.test>'), 250, undef, 'twice: MAIL');
	reply_ok($c->cmd('RCPT TO:<a@example.test>'), 250, undef, 'twice: RCPT (its first answer)');
	sleep 0.5;
	reply_ok($c->cmd('DATA'), 451, '4.7.1', 'twice: then 451 4.7.1 at DATA');
	$c->close;
	like($pk->log_text, qr/SMFIR_CONTINUE when no reply was due; tempfail/, 'twice: logged');

	# REPLYCODE: multi-line, and %% as %.
	$c = $session->();
	$r = $c->cmd('MAIL FROM:<multi@client.test>');
	is($r->{raw}, "451-4.7.1 first line\r\n451 4.7.1 second line\r\n", 'REPLYCODE: a multi-line 451 as the milter sent it');
	$r = $c->cmd('MAIL FROM:<percent@client.test>');
	is($r->{raw}, "550 5.7.1 100% sure\r\n", 'REPLYCODE: %% becomes % (sendmail format)');
	$c->quit;

	# Changes at end of message, bare LF in the body, CHGHEADER index 0, PROGRESS.
	($tag, $data) = message('eomstuff');
	$c = $session->();
	$r = $c->send_mail(from => 'eomstuff@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($r->{end}, 250, undef, 'eom changes: 250');
	$c->quit;
	my $m = delivered($tag);
	body_is($m, "line one\nline two\nline three\n", 'REPLBODY: bare LF made CRLF (the sink shows LF)');
	like($m->{raw} // '', qr/line one\nline two\nline three\n/, 'REPLBODY: no stray CR');
	my @h = $m ? headers_of($m) : ();
	my ($chg) = grep { $_->[0] eq 'X-Change-Me' } @h;
	is($chg && $chg->[1], 'new folded', 'CHGHEADER index 0 is the first occurrence; folding kept');
	like($m->{message} // '', qr/^X-Change-Me: new\n\tfolded\n/m, 'CHGHEADER: LF made CRLF, the space given back');
	is($h[0] && $h[0][0], 'X-Second', 'INSHEADER at index 1: first, just below the MTA\'s Received: as behind Postfix');
	is($m && $m->{mail}, '<>', 'CHGFROM to the null sender');
	ok($m && grep({ /^<plain\@example\.org>$/ } @{ $m->{rcpt} }), 'ADDRCPT');
	wait_until(sub { $flog->() =~ /^K $/m }, 5);
	like($flog->(), qr/^E \n(?:[^\n]*\n)*?K $/m, 'bytes: SMFIC_QUIT_NC after an end of message answered CONTINUE');

	# SKIP: no more BODY after it.
	my $body = 'y' x 100 . "\r\n";
	$body x= 1500;
	($tag, $data) = message('skipbody', body => $body);
	my $before = () = $flog->() =~ /^B /mg;
	$c = $session->();
	$r = $c->send_mail(from => 'skipbody@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($r->{end}, 250, undef, 'SKIP: 250');
	$c->quit;
	my $after = () = $flog->() =~ /^B /mg;
	is($after - $before, 1, 'SKIP: one BODY sent, none after SMFIR_SKIP');

	# The client leaves while the milter thinks: no resume, no crash, the next session works.
	($tag, $data) = message('slow');
	$c = $session->();
	$c->begin_data(from => 'slow@client.test', to => 'rcpt@example.test');
	$c->send(SmtpChainTest::dot_stuff($data) . ".\r\n");
	sleep 0.3;
	$c->close;
	sleep 2.5;
	ok($pk->alive, 'client gone during a pending eom: the proxy is alive');
	($tag, $data) = message('afterslow');
	$c = $session->();
	$r = $c->send_mail(from => 'sender@client.test', to => 'rcpt@example.test', data => $data);
	reply_ok($r->{end}, 250, undef, 'client gone during a pending eom: the next session works');
	$c->quit;
	$pk->stop_ok('fake-milter proxy exits 0');

	# A milter speaking protocol version 1: refused at negotiation.
	my $old = start_fake('old', version => 1);
	my $po = proxy_with('old', milter_block("inet:127.0.0.1:$old->{port}", default_action => '"accept"'));
	($tag, $data) = message('plain');
	$r = transact($po->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'version 1: accept as default_action');
	like($po->log_text, qr/protocol version 1 not supported; accept for the rest of the session/,
	    'version 1: logged');
	$po->stop_ok('old-milter proxy exits 0');
}

# --- a client that connects and leaves at once: the milter gets SMFIC_QUIT, not a bare EOF
{
	my $fs = start_fake('slow', slow_connect => 0.3);
	my $ps = proxy_with('slow', milter_block("inet:127.0.0.1:$fs->{port}"));
	my $flog = sub { slurp($fs->{log}) // '' };
	for my $n (1 .. 2) {
		my $c = smtp_connect($ps->port) or die "connect: $@\n";
		# Gone once the proxy has opened its milter connection, before the
		# milter answered (on a slow machine the proxy may see the close
		# only after OPTNEG's or CONNECT's reply: QUIT all the same).
		wait_until(sub { (() = $flog->() =~ /^O /mg) >= $n }, 60);
		$c->close;
		wait_until(sub { (() = $flog->() =~ /^eof$/mg) >= $n }, 60);
	}
	my @sessions = split /^(?=connect$)/m, $flog->();
	is(scalar(@sessions), 2, 'connect and leave: two milter connections');
	for my $s (@sessions) {
		like($s, qr/^connect\nO [0-9a-f]+\n(?:D [^\n]*\nC [^\n]*\n)?Q \neof\n\z/,
		    'connect and leave: negotiated, then SMFIC_QUIT before the close (no bare EOF)')
		    or diag($s);
	}
	$ps->stop_ok('slow-milter proxy exits 0');
}

# --- SMFIP_MDS_1M: commands of up to 1 MB, offered in SMFIC_OPTNEG
# (Debian's libmilter is not built with MDS negotiation and ignores the
# offer: t/94-long-lines.t has a real one that hangs up on a long header.)
{
	my $mds = start_fake('mds', protocol => 0x20000000);
	my $pm = proxy_with('mds', milter_block("inet:127.0.0.1:$mds->{port}"));
	my $long = 'X-Long: ' . join("\r\n ", ('y' x 70) x 1500) . "\r\n";
	my ($tag, $data) = message('plain', headers => $long);
	my $r = transact($pm->port, data => $data);
	reply_ok($r->{end}, 250, undef, 'MDS_1M: a message with a 106 KB header goes through');
	ok(delivered($tag), 'MDS_1M: delivered');
	my $flog = slurp($mds->{log}) // '';
	my ($offer) = $flog =~ /^O ([0-9a-f]{24})$/m;
	ok($offer && (hex(substr($offer, 16, 8)) & 0x20000000), 'MDS_1M: offered in SMFIC_OPTNEG')
	    or diag("OPTNEG: " . ($offer // 'none'));
	my ($hdr) = $flog =~ /^L (X-Long\|[^\n]*)$/m;
	ok($hdr && length($hdr) > 100000, 'MDS_1M: the whole header went to the milter in one command');
	like($pm->log_text, qr/commands of up to 1048575 octets/, 'MDS_1M: the size is logged');
	unlike($pm->log_text, qr/over the \d+ the milter negotiated/, 'MDS_1M: the header was within it');
	$pm->stop_ok('MDS proxy exits 0');
}

# --- bad configurations
{
	my $sport = $sink->port;
	for my $case (['inet:localhost:25', qr/not a numeric IPv4 address/],
	    ['inet:127.0.0.1', qr/no port/], ['tcp:1.2.3.4:5', qr/expected inet:HOST:PORT/],
	    ['inet:127.0.0.1:99999', qr/bad port/], ['unix:relative', qr/absolute path/]) {
		my ($sock, $re) = @$case;
		my $conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
		    milter_block($sock));
		my $out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
		ok($? != 0, "socket \"$sock\" refused");
		like($out, $re, "socket \"$sock\": says why");
	}
	my $conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    milter_block('inet:127.0.0.1:1', default_action => '"maybe"'));
	my $out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	like($out, qr/default_action: "maybe": expected/, 'a bad default_action is refused');
	$conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    milter_block('inet:127.0.0.1:1', timeout_eom => 5, timeout_bogus => 1));
	$out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	like($out, qr/unknown key "timeout\.bogus"/, 'a misspelt key inside timeout {} is refused by its dotted name');
	$conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    milter_block('inet:127.0.0.1:1', timeout_content => 0));
	$out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	like($out, qr/timeout\.content: 0 is out of range/, 'timeout.content 0 is refused');
	$conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    milter_block('inet:127.0.0.1:1', idle_connections => 65));
	$out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	like($out, qr/idle_connections: 65 is out of range/, 'idle_connections over 64 is refused');
	$conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    milter_block('inet:127.0.0.1:1', timeout_connect => 5, timeout_command => 5,
		timeout_content => 5, timeout_eom => 5, idle_connections => 0));
	$out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	is($?, 0, 'every timeout {} key and idle_connections = 0 are accepted') or diag($out);
	$conf = spew("$dir/bad.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:$sport";\n} .
	    "filter {\n\tmodule = \"$module\";\n}\n");
	$out = `$ENV{SMTPCHAIN} -t -c $dir/bad.conf 2>&1`;
	like($out, qr/missing key "socket"/, 'socket is required');
}

done_testing();
