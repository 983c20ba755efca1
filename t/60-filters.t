# 60-filters.t - the filter chain end to end, driven by the test module
# t/modules/testfilter.so.
#
# What the client is told (exact replies, the module's own texts) and what
# the backend receives (smtp-sink's dump: envelope and message) for every
# verdict and every message change of the module ABI, with modules that
# answer at once and modules that answer later (pending, from a libuv
# timer).  Then: a chain of two modules where the second sees the first's
# changes, two sessions in parallel while one is held by a pending module,
# BDAT into a holding chain (smtp-sink with CHUNKING added, and a real
# Postfix), a 50 MB message through a body-scanning chain with bounded
# memory, many sessions holding near-limit header sections with bounded
# memory (spilled past spool_memory), and a chain without message hooks
# that streams.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use File::Path qw(make_path);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $TF = "$BUILD/t/modules/.libs/testfilter.so";
plan skip_all => "$TF is not built (make check builds it)" unless -f $TF;

my $dir = tmpdir();

# Stop a proxy: SIGTERM must make it exit 0 with no sanitizer report.
sub stop_proxy {
	my ($p, $name) = @_;
	$p->stop_ok($name);
}

my $QDIR = "$dir/quarantine";
make_path($QDIR);

# A filter {} block for testfilter from option => value pairs: array refs
# become lists, true/false and numbers stay bare, the rest is quoted.
sub tf_block {
	my (@kv) = @_;
	my $t = "filter {\n    module = \"$TF\";\n";
	while (my ($k, $v) = splice(@kv, 0, 2)) {
		my $val;
		if (ref $v eq 'ARRAY') {
			$val = '[ ' . join(', ', map { quote($_) } @$v) . ' ]';
		} elsif ($v =~ /\A(?:true|false|\d+)\z/) {
			$val = $v;
		} else {
			$val = quote($v);
		}
		$t .= "    $k = $val;\n";
	}
	return $t . "}\n";
}

sub quote {
	my ($s) = @_;
	$s =~ s/(["\\])/\\$1/g;
	$s =~ s/\n/\\n/g;
	return qq{"$s"};
}

my $sink = start_sink();
my $bport = $sink->port;

# A proxy in front of the sink with this chain and extra config text
# (spool_dir and quarantine_dir: the test's unless the extra text sets them).
sub chain_proxy {
	my ($name, $chain, $extra) = @_;
	$extra //= '';
	$extra .= qq{spool_dir = "$dir";\n} unless $extra =~ /^spool_dir\b/m;
	$extra .= qq{quarantine_dir = "$QDIR";\n} unless $extra =~ /^quarantine_dir\b/m;
	return start_proxy(<<"EOF" . $extra . $chain, name => $name);
backend = "127.0.0.1:$bport";
log { level = "info"; }
timeout { command = 60; data = 60; backend = 60; connect = 10; shutdown = 5; }
EOF
}

# Connect, read the greeting, EHLO; returns the client.
sub ehlo_client {
	my ($port, %o) = @_;
	my $c = smtp_connect($port, %o) or die "connect to $port: $@\n";
	$c->read_reply;
	$c->ehlo($o{helo} || 'client.test');
	return $c;
}

# The reply as text, for is() against an exact line.
sub raw { my ($r) = @_; return $r ? $r->{raw} // '' : '' }

# A unique message id per message, so the sink's dump can be found.
my $seq = 0;
sub uid { return sprintf('%s-%d-%d', $_[0], $$, ++$seq) }

# The messages at the sink whose Message-ID is <id@client.test>.
sub at_sink {
	my ($id, $timeout) = @_;
	return $sink->wait_find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m, $timeout);
}

# Whether no message with this id reached the sink (checked after a later
# marker message went through, so nothing is still on its way).
sub not_at_sink {
	my ($id) = @_;
	return !$sink->find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m);
}

# A marker message through port, waited for at the sink: every message
# the proxy relayed before it has been dumped by then.
sub flush_sink {
	my ($port) = @_;
	my $id = uid('marker');
	my $c = ehlo_client($port);
	my $r = $c->send_mail(from => 'marker@client.test', to => 'marker@example.test',
	    data => make_message(id => $id, subject => 'marker'));
	$c->quit;
	return at_sink($id) ? 1 : 0;
}

# make_message with one more header line (without its CRLF) after the others.
sub with_header_line {
	my ($line, %o) = @_;
	return make_message(%o) =~ s/\r\n\r\n/\r\n$line\r\n\r\n/r;
}

# The chain every verdict is checked with.  The second module rejects
# what the first accepts, so an accept that did not skip the rest of the
# chain shows.
sub verdict_chain {
	my ($pending) = @_;
	return tf_block(tag => 'one', pending => $pending,
	    reject_connect_from => '127.0.0.2', reject_helo => 'bad.helo.test',
	    reject_mail => 'spammer@client.test', reject_rcpt => 'nobody@example.test',
	    tempfail_rcpt => 'later@example.test',
	    verdict_subject => [ 'REJECTME=reject', 'TEMPME=tempfail', 'DROPME=discard',
		'HOLDME=quarantine', 'ACCEPTME=accept' ]) .
	    tf_block(tag => 'two', pending => $pending, verdict_subject => [ 'ACCEPTME=reject' ]);
}

# --- every verdict, answered at once and answered later
sub verdict_tests {
	my ($p, $mode) = @_;
	my $port = $p->port;

	# Refused at connect: 554 with the module's text, then closed.
	{
		my $c = smtp_connect($port, local_addr => '127.0.0.2') or die "connect: $@\n";
		my $g = $c->read_reply;
		is(raw($g), "554 5.7.1 one: connection refused\r\n",
		    "$mode: connect from 127.0.0.2 refused with the module's 554");
		ok($c->wait_closed(10), "$mode: then the connection is closed");
		$c->close;
		my $c2 = smtp_connect($port) or die "connect: $@\n";
		reply_ok($c2->read_reply, 220, undef, "$mode: a connection from 127.0.0.1 gets the greeting");
		$c2->close;
	}

	# HELO/EHLO refused; the session goes on and a good EHLO works.
	{
		my $c = smtp_connect($port);
		$c->read_reply;
		is(raw($c->ehlo('bad.helo.test')), "550 5.7.1 one: helo refused\r\n",
		    "$mode: EHLO bad.helo.test refused with the module's 550");
		is(raw($c->cmd('HELO bad.helo.test')), "550 5.7.1 one: helo refused\r\n",
		    "$mode: HELO bad.helo.test refused too");
		reply_ok($c->ehlo('good.helo.test'), 250, undef, "$mode: then EHLO good.helo.test is accepted");
		# Sender refused, then another sender in the same session.
		is(raw($c->cmd('MAIL FROM:<Spammer@Client.test>')), "550 5.7.1 one: sender refused\r\n",
		    "$mode: MAIL from the refused sender (other case): the module's 550");
		my $id = uid('after-mail-reject');
		my $msg = make_message(id => $id, subject => 'after a refused sender');
		my $r = $c->send_mail(from => 'fine@client.test', to => 'r@example.test', data => $msg);
		reply_ok($r->{end}, 250, '2.0.0', "$mode: a message from another sender goes through");
		$c->quit;
		my ($m) = at_sink($id);
		is($m && $m->{helo}, 'good.helo.test', "$mode: the backend got the good HELO name")
		    or diag(explain($m));
		my @cmds = $sink->commands;
		ok(!(grep { /bad\.helo\.test|spammer\@client\.test/i } @cmds),
		    "$mode: the refused EHLO, HELO and MAIL never reached the backend")
		    or diag(join("\n", grep { /bad\.helo|spammer/i } @cmds));
	}

	# Per recipient: refused and deferred ones get the module's replies, the
	# others get the message, and only they are in the backend's envelope.
	{
		my $c = ehlo_client($port);
		my $id = uid('rcpts');
		my $msg = make_message(id => $id, subject => 'some recipients refused',
		    body => "Hello.\r\n.A line starting with a dot.\r\n..Two dots.\r\n" .
		    ('x' x 3000) . "\r\n\r\n.\r\n \r\nLast line.\r\n");
		my $r = $c->send_mail(from => 'rcpts@client.test',
		    to => ['a@example.test', 'nobody@example.test', 'later@example.test', 'b@example.test'],
		    data => $msg);
		reply_ok($r->{mail}, 250, '2.1.0', "$mode: MAIL relayed");
		reply_ok($r->{rcpt}[0], 250, '2.1.5', "$mode: first recipient relayed");
		is(raw($r->{rcpt}[1]), "550 5.7.1 one: recipient refused\r\n",
		    "$mode: nobody\@example.test: the module's 550");
		is(raw($r->{rcpt}[2]), "451 4.7.1 one: recipient temporarily refused\r\n",
		    "$mode: later\@example.test: the module's 451");
		reply_ok($r->{rcpt}[3], 250, '2.1.5', "$mode: last recipient relayed");
		is(raw($r->{data}), "354 End data with <CR><LF>.<CR><LF>\r\n",
		    "$mode: DATA answered by the proxy (the message is held for the chain)");
		is(raw($r->{end}), "250 2.0.0 Ok\r\n", "$mode: end of data: the backend's own 250");
		$c->quit;
		my ($m) = at_sink($id);
		ok($m, "$mode: the message reached the backend") or next;
		is_deeply($m->{rcpt}, ['<a@example.test>', '<b@example.test>'],
		    "$mode: the backend's envelope has the two accepted recipients only");
		is($m->{mail}, '<rcpts@client.test>', "$mode: envelope sender as sent");
		{
			is($m->{message}, to_lf($msg),
			    "$mode: a message no filter changed arrives byte for byte (dots, long line, blank lines)");
		}
		ok(!(grep { /nobody\@|later\@/ } $sink->commands),
		    "$mode: the refused recipients never reached the backend");
	}

	# Verdicts at the end of the message, one session, one message each.
	my $c = ehlo_client($port);
	my %ids;
	my @cases = (
		['REJECTME', "550 5.7.1 one: subject REJECTME\r\n", 'rejected', 'reject: the module\'s 550'],
		['TEMPME', "451 4.7.1 one: subject TEMPME\r\n", 'deferred', 'tempfail: the module\'s 451'],
		['DROPME', qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'discarded', 'discard: 250 "Ok: queued as MSGID", as for a relayed message'],
	);
	for my $case (@cases) {
		my ($word, $want, $status, $what) = @$case;
		my $id = $ids{$word} = uid(lc $word);
		my $from = lc($word) . "\@client.test";
		my $r = $c->send_mail(from => $from, to => 'v@example.test',
		    data => make_message(id => $id, subject => "verdict $word here"));
		ref $want ? like(raw($r->{end}), $want, "$mode: $what") : is(raw($r->{end}), $want, "$mode: $what");
		my $l = $p->wait_log(qr/(from=<\Q$from\E>[^\n]* status=[^\n]*)/);
		like($l // '', qr/ status=$status filter=testfilter reply=/,
		    "$mode: logged as status=$status filter=testfilter (the module's name)") or diag($p->log_tail);
	}

	# Quarantine: 250 "queued as MSGID" (as for a relayed message: the sender is
	# not told), MSGID.TIME.eml has the envelope and the message.
	{
		my $id = $ids{HOLDME} = uid('holdme');
		my $msg = make_message(id => $id, subject => 'verdict HOLDME here',
		    body => "quarantined body\r\n.dot line\r\n");
		my $r = $c->send_mail(from => 'holdme@client.test', to => ['q1@example.test', 'q2@example.test'],
		    data => $msg);
		like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/,
		    "$mode: quarantine: 250 \"Ok: queued as MSGID\", as for a relayed message");
		my ($name) = raw($r->{end}) =~ /queued as (\S+)\r\n/;
		# Message ids start again in each proxy of this test, and its proxies
		# share $QDIR: the file is the one this proxy's log names.
		my $file = defined $name ? $p->wait_log(qr/: quarantined as (\S+\/\Q$name\E\.\S+)/) : undef;
		ok($file && -f $file && $file =~ m{\A\Q$QDIR\E/\Q$name\E\.\d+(?:-\d+)?\.eml\z},
		    "$mode: quarantine_dir/MSGID.TIME.eml exists") or diag(raw($r->{end}), $p->log_tail);
		my $q = $file ? slurp($file) // '' : '';
		my $cport = $c->local_port;
		like($q, qr/\AX-Smtpchain-Quarantine: session=[0-9A-F]+ client=\[127\.0\.0\.1\]:$cport helo=<client\.test> filter=testfilter\r\n/,
		    "$mode: the file starts with the session, client, HELO and deciding filter") or diag($q);
		(my $rest = $q) =~ s/\AX-Smtpchain-Quarantine: [^\n]*\n//;
		{
			is($rest, "X-Smtpchain-Envelope-From: <holdme\@client.test>\r\n" .
			    "X-Smtpchain-Envelope-To: <q1\@example.test>\r\nX-Smtpchain-Envelope-To: <q2\@example.test>\r\n" .
			    $msg, "$mode: then the envelope lines and the message, unstuffed, CRLF, exactly");
		}
		my $l = $p->wait_log(qr/(from=<holdme\@client\.test>[^\n]* status=[^\n]*)/);
		like($l // '', qr/ status=quarantined filter=testfilter reply="250 2\.0\.0 Ok: queued as \Q$name\E"/,
		    "$mode: logged as status=quarantined filter=testfilter") or diag($p->log_tail);
		ok(!(grep { /\.tmp\./ } glob("$QDIR/.*")), "$mode: no temporary file left in quarantine_dir");
	}

	# Accept: the rest of the chain is skipped (module two would reject it).
	{
		my $id = uid('acceptme');
		my $msg = make_message(id => $id, subject => 'verdict ACCEPTME here');
		my $r = $c->send_mail(from => 'acceptme@client.test', to => 'v@example.test', data => $msg);
		is(raw($r->{end}), "250 2.0.0 Ok\r\n",
		    "$mode: accept: the backend's 250 (the next module, which would reject, is skipped)");
		my ($m) = at_sink($id);
		{
			is($m && $m->{message}, to_lf($msg), "$mode: accept: the message arrives unchanged");
		}
	}
	# The session is still usable after all of that.
	{
		my $id = uid('after-verdicts');
		my $msg = make_message(id => $id, subject => 'after the verdicts');
		my $r = $c->send_mail(from => 'after@client.test', to => 'v@example.test', data => $msg);
		reply_ok($r->{end}, 250, '2.0.0', "$mode: a plain message after them in the same session");
		reply_ok($c->quit, 221, undef, "$mode: QUIT");
		ok(at_sink($id), "$mode: and it arrives");
	}
	ok(flush_sink($port), "$mode: marker message through");
	for my $w (qw(REJECTME TEMPME DROPME HOLDME)) {
		ok(not_at_sink($ids{$w}), "$mode: the $w message never reached the backend");
	}
}

my $pv = chain_proxy('verdicts', verdict_chain('false'));
verdict_tests($pv, 'at once');
my $pvp = chain_proxy('verdicts-pending', verdict_chain('true'));
verdict_tests($pvp, 'pending');

# --- message changes, and a second module that sees them
sub change_chain {
	my ($pending) = @_;
	return tf_block(tag => 'one', pending => $pending, trace => 'true',
	    verdict_subject => [ 'ACCEPTME=accept' ],
	    change_from => 'new-sender@client.test', add_rcpt => 'added@example.test',
	    del_rcpt => 'gone@example.test', delete_header => 'X-Drop',
	    change_header => 'Subject: changed subject', add_header => 'X-Added: yes',
	    insert_header => 'X-First: first', replace_body => "replaced body\nsecond line\n") .
	    tf_block(tag => 'two', pending => $pending, trace => 'true');
}

sub change_tests {
	my ($p, $mode) = @_;
	my $port = $p->port;
	my $id = uid('changes');
	my $head = "From: <orig\@client.test>\r\nTo: <keep\@example.test>\r\n" .
	    "Subject: original subject\r\nX-Drop: the first one goes\r\n" .
	    "Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$id\@client.test>\r\n" .
	    "X-Folded: one\r\n\ttwo\r\nX-Drop: the second one stays\r\n";
	my $body = "original body\r\n.with a dot\r\n";
	my $c = ehlo_client($port);
	my $r = $c->send_mail(from => 'orig@client.test', to => ['keep@example.test', 'gone@example.test'],
	    data => "$head\r\n$body");
	reply_ok($r->{end}, 250, '2.0.0', "$mode: the changed message is accepted");

	my ($m) = at_sink($id);
	ok($m, "$mode: it reaches the backend") or return;
	is($m->{mail}, '<new-sender@client.test>', "$mode: change_from: the backend's MAIL has the new sender");
	is_deeply($m->{rcpt}, ['<keep@example.test>', '<added@example.test>'],
	    "$mode: del_rcpt removed gone\@, add_rcpt added added\@ (after the kept one)");
	my $nh = 8;	# headers sent
	my $want = "X-First: first\r\nFrom: <orig\@client.test>\r\nTo: <keep\@example.test>\r\n" .
	    "Subject: changed subject\r\n" .
	    "Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$id\@client.test>\r\n" .
	    "X-Folded: one\r\n\ttwo\r\nX-Drop: the second one stays\r\nX-Added: yes\r\n" .
	    "X-Testfilter-one: helo=client.test from=orig\@client.test rcpts=2 headers=$nh body=" .
	    length($body) . "\r\n" .
	    "X-Testfilter-two: helo=client.test from=orig\@client.test rcpts=2 headers=" . ($nh + 2) .
	    " body=" . length("replaced body\r\nsecond line\r\n") . "\r\n" .
	    "\r\nreplaced body\r\nsecond line\r\n";
	{
		is($m->{message}, to_lf($want),
		    "$mode: insert at 0, first X-Drop deleted, Subject changed in place, X-Added and the traces appended, body replaced (LF made CRLF); module two counted one's headers and new body")
		    or diag("got:\n$m->{message}");
	}
	my $l = $p->wait_log(qr/(from=<new-sender\@client\.test>[^\n]* status=[^\n]*)/);
	like($l // '', qr/ nrcpt=\d+ [^\n]*status=sent modified=yes reply="250 2\.0\.0 Ok"/,
	    "$mode: logged as sent, modified=yes") or diag($p->log_tail);
	# What the backend got after the replayed MAIL: the kept and added recipients.
	my @cmds = $sink->commands;
	my ($at) = grep { $cmds[$_] eq 'MAIL FROM:<new-sender@client.test>' } reverse 0 .. $#cmds;
	my @replay = defined $at ? @cmds[$at .. ($at + 3 > $#cmds ? $#cmds : $at + 3)] : ();
	is_deeply(\@replay, ['MAIL FROM:<new-sender@client.test>', 'RCPT TO:<keep@example.test>',
	    'RCPT TO:<added@example.test>', 'DATA'],
	    "$mode: the envelope replayed to the backend: new sender, kept and added recipients, DATA")
	    or diag(join("\n", @cmds[-15 .. -1]));

	# An accept from module one: its changes are made, module two is skipped.
	my $id2 = uid('changes-accept');
	$r = $c->send_mail(from => 'orig@client.test', to => 'keep@example.test',
	    data => make_message(id => $id2, subject => 'ACCEPTME please', body => "short\r\n"));
	reply_ok($r->{end}, 250, '2.0.0', "$mode: accept after changes: accepted");
	$c->quit;
	($m) = at_sink($id2);
	my $t = $m ? $m->{message} : '';
	like($t, qr/^X-Testfilter-one: /m, "$mode: accept: module one's trace is there");
	unlike($t, qr/^X-Testfilter-two:/m, "$mode: accept: module two never saw the message");
	like($t, qr/^Subject: changed subject$/m, "$mode: accept: module one's changes are kept");
}

my $pc = chain_proxy('changes', change_chain('false'));
change_tests($pc, 'at once');
my $pcp = chain_proxy('changes-pending', change_chain('true'));
change_tests($pcp, 'pending');

# --- changes that change nothing: no modified=yes, the message and envelope as sent
# (the Subject set to the value it has, a missing header deleted, the same
# body, the same sender, a recipient already there, one that is not deleted);
# the same module with a Subject it does change says modified=yes.
{
	my $p = chain_proxy('no-op-changes', tf_block(tag => 'noop',
	    change_header => 'Subject: same subject', delete_header => 'X-Not-There',
	    replace_body => "same body\nsecond line\n", change_from => 'same@client.test',
	    add_rcpt => 'same@example.test', del_rcpt => 'absent@example.test'));
	my $c = ehlo_client($p->port);
	my $id = uid('noop');
	my $msg = make_message(id => $id, subject => 'same subject', body => "same body\r\nsecond line\r\n");
	my $r = $c->send_mail(from => 'same@client.test', to => 'same@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', 'no-op changes: accepted');
	my ($m) = at_sink($id);
	is($m && $m->{message}, to_lf($msg), 'no-op changes: the message arrives as sent');
	is_deeply($m && $m->{rcpt}, ['<same@example.test>'], 'no-op changes: one recipient, not added twice');
	is(scalar(grep { $_ eq 'MAIL FROM:<same@client.test>' } $sink->commands), 1,
	    'no-op changes: the envelope is not replayed');
	my $l = $p->wait_log(qr/(from=<same\@client\.test>[^\n]* status=[^\n]*)/);
	like($l // '', qr/ status=sent reply=/, 'no-op changes: logged without modified=yes') or diag($p->log_tail);

	my $id2 = uid('noop-not');
	$r = $c->send_mail(from => 'same@client.test', to => 'same@example.test',
	    data => make_message(id => $id2, subject => 'another subject', body => "same body\r\nsecond line\r\n"));
	reply_ok($r->{end}, 250, '2.0.0', 'one real change: accepted');
	$c->quit;
	($m) = at_sink($id2);
	like($m ? $m->{message} : '', qr/^Subject: same subject$/m, 'one real change: the Subject is changed');
	$l = $p->wait_log(qr/(from=<same\@client\.test>[^\n]* status=[^\n]*modified[^\n]*)/);
	like($l // '', qr/ status=sent modified=yes reply=/, 'one real change: logged with modified=yes')
	    or diag($p->log_tail);
	stop_proxy($p, 'no-op proxy exits 0');
}

# --- a pending module never stalls other sessions
{
	my $port = $pvp->port;
	# 300 headers through two pending modules (10 ms per hook each): the
	# first message is held for several seconds.
	my $id1 = uid('slow');
	my $many = join('', map { "X-Many-$_: header number $_\r\n" } 1 .. 300);
	my $slow = make_message(id => $id1, subject => 'slow one') =~ s/\r\n\r\n/\r\n$many\r\n/r;
	my $c1 = ehlo_client($port);
	my $b1 = $c1->begin_data(from => 'slow@client.test', to => 'slow@example.test');
	reply_ok($b1->{data}, 354, undef, 'parallel: DATA of the slow message');
	my $t0 = time;
	$c1->send(dot_stuff($slow) . ".\r\n");

	my $id2 = uid('fast');
	my $fast = make_message(id => $id2, subject => 'fast one');
	my $c2 = ehlo_client($port);
	my $r2 = $c2->send_mail(from => 'fast@client.test', to => 'fast@example.test', data => $fast);
	my $t2 = time - $t0;
	reply_ok($r2->{end}, 250, '2.0.0', 'parallel: a second session completes a message meanwhile');
	my $early = $c1->read_reply(0.05);
	ok($early->{timeout}, sprintf('parallel: the first is still held when the second is done (%.2f s)', $t2))
	    or diag(SmtpChainTest::Client::describe($early));
	$c2->quit;
	my $r1 = $early->{timeout} ? $c1->read_reply(60) : $early;
	reply_ok($r1, 250, '2.0.0', sprintf('parallel: the held message is then accepted (%.2f s)', time - $t0));
	$c1->quit;
	my ($m1) = at_sink($id1);
	my ($m2) = at_sink($id2);
	{
		is($m1 && $m1->{message}, to_lf($slow), 'parallel: the slow message arrives unchanged');
	}
	{
		is($m2 && $m2->{message}, to_lf($fast), 'parallel: the fast message arrives unchanged');
	}
}

# --- edge cases of a held message, with a pending module
{
	my $p = chain_proxy('edges', tf_block(tag => 'e', pending => 'true', reject_rcpt => 'nobody@example.test',
	    del_rcpt => 'only@example.test', verdict_subject => [ 'HOLDME=quarantine', 'REJECTME=reject', 'DROPME=discard' ],
	    add_header => 'X-Long-Added:' . ('v' x 9000)),
	    qq{quarantine_dir = "$dir/no-such-quarantine";\nlimits { max_message_size = 100000; max_header_size = 2048; }\n} .
	    qq{ehlo { add = [ "CHUNKING" ]; }\n});
	my $c = ehlo_client($p->port);

	# Pipelined envelope through pending hooks: the replies in order.
	my $id = uid('edge-pipe');
	$c->send("MAIL FROM:<pipe\@client.test>\r\nRCPT TO:<a\@example.test>\r\nRCPT TO:<nobody\@example.test>\r\n" .
	    "RCPT TO:<b\@example.test>\r\nDATA\r\n");
	my @r = map { $c->read_reply } 1 .. 5;
	is(join('', map { raw($_) } @r), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.7.1 e: recipient refused\r\n" .
	    "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
	    'edges: MAIL, 3 RCPT, DATA in one write through a pending module: the replies in order');
	$c->send(dot_stuff(make_message(id => $id, subject => 'pipelined')) . ".\r\n");
	is(raw($c->read_reply), "250 2.0.0 Ok\r\n", 'edges: and the message goes');
	my ($m) = at_sink($id);
	is_deeply($m && $m->{rcpt}, ['<a@example.test>', '<b@example.test>'], 'edges: to the two accepted recipients');
	{
		# add_header with a 9000-octet value written without a space
		# after the colon: the host stores it exactly as given (filter.h),
		# whatever the length.
		like($m ? $m->{message} : '', qr/^X-Long-Added:v{9000}$/m,
		    'edges: a module\'s 9000-octet header value is added exactly as given');
	}

	# Every recipient refused by the module: DATA gets 554, the backend no DATA.
	$c->send("MAIL FROM:<none\@client.test>\r\nRCPT TO:<nobody\@example.test>\r\nDATA\r\n");
	@r = map { $c->read_reply } 1 .. 3;
	is(join('', map { raw($_) } @r), "250 2.1.0 Ok\r\n550 5.7.1 e: recipient refused\r\n" .
	    "554 5.5.1 Error: no valid recipients\r\n", 'edges: no recipient left: DATA gets 554 5.5.1');
	reply_ok($c->cmd('RSET'), 250, undef, 'edges: RSET');

	# The module deletes the only recipient: discarded, nothing at the backend.
	my $id2 = uid('edge-only');
	my $r = $c->send_mail(from => 'only@client.test', to => 'only@example.test', data => make_message(id => $id2));
	like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'edges: del_rcpt of the only recipient: 250 "Ok: queued as MSGID"');
	like($p->wait_log(qr/(from=<only\@client\.test>[^\n]*status=[^\n]*)/) // '', qr/ status=discarded /,
	    'edges: logged as discarded');

	# quarantine_dir missing: 451, nothing kept, nothing delivered.
	my $id3 = uid('edge-noq');
	$r = $c->send_mail(from => 'noq@client.test', to => 'q@example.test',
	    data => make_message(id => $id3, subject => 'HOLDME'));
	is(raw($r->{end}), "451 4.3.0 Error: cannot keep the message, try again later\r\n",
	    'edges: quarantine with quarantine_dir missing: 451 4.3.0');
	like($p->wait_log(qr/(from=<noq\@client\.test>[^\n]*status=[^\n]*)/) // '', qr/ status=deferred /,
	    'edges: logged as deferred');

	# Over max_message_size while held: 552, and the session goes on.
	$r = $c->send_mail(from => 'big@client.test', to => 'r@example.test',
	    data => make_message(subject => 'too big', body => scalar(('x' x 998 . "\r\n") x 120)));
	is(raw($r->{end}), "552 5.3.4 Error: message size exceeds fixed limit\r\n", 'edges: held message over the size limit: 552');
	reply_ok($c->cmd('NOOP'), 250, undef, 'edges: the session goes on after it');

	# A header section over limits.max_header_size: 552.
	$r = $c->send_mail(from => 'hdr@client.test', to => 'r@example.test',
	    data => with_header_line('X-Huge: ' . ('h' x 3000)));
	is(raw($r->{end}), "552 5.3.4 Error: message header size exceeds limit\r\n", 'edges: header section over max_header_size: 552');

	# BDAT LAST gets the module's verdict.
	for my $case (['REJECTME', "550 5.7.1 e: subject REJECTME\r\n"], ['DROPME', qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/]) {
		my ($word, $want) = @$case;
		my $msg = make_message(subject => "bdat $word");
		$c->send("MAIL FROM:<bdat\@client.test>\r\nRCPT TO:<r\@example.test>\r\nBDAT 10\r\n" . substr($msg, 0, 10));
		@r = map { $c->read_reply } 1 .. 3;
		is(raw($r[2]), "250 2.0.0 Ok: 10 octets received\r\n", "edges: BDAT $word: the first chunk is taken");
		$c->send('BDAT ' . (length($msg) - 10) . " LAST\r\n" . substr($msg, 10));
		my $got = raw($c->read_reply);
		ref $want ? like($got, $want, "edges: BDAT $word: BDAT LAST gets the module's answer")
		    : is($got, $want, "edges: BDAT $word: BDAT LAST gets the module's answer");
	}
	$c->quit;

	# The client goes away before the end of a message held for a pending
	# module: dropped.
	my $id4 = uid('edge-gone');
	my $g = ehlo_client($p->port);
	$g->begin_data(from => 'gone@client.test', to => 'r@example.test');
	$g->send(dot_stuff(with_header_line(join("\r\n", map { "X-Gone-$_: v" } 1 .. 60), id => $id4)));
	$g->close;
	ok($p->wait_log(qr/(client disconnected in the middle of a message[^\n]*)/),
	    'edges: a client gone before the end of its held message: logged, the message dropped');
	# A finished message, then QUIT and a half-close while the module holds
	# it (Exim does that): the module's verdict, the backend's 250, then 221
	# (Postfix too answers what was sent before an EOF); delivered once.
	my $id5 = uid('edge-half');
	$g = ehlo_client($p->port);
	$g->begin_data(from => 'half@client.test', to => 'r@example.test');
	$g->send(dot_stuff(with_header_line(join("\r\n", map { "X-Half-$_: v" } 1 .. 60), id => $id5)) . ".\r\nQUIT\r\n");
	$g->socket->shutdown(1);
	reply_ok($g->read_reply, 250, undef, 'edges: a held message, QUIT and a half-close: 250 for the message');
	reply_ok($g->read_reply, 221, undef, 'edges: then 221');
	$g->close;
	is(scalar(at_sink($id5)), 1, 'edges: and it is delivered once');
	ok($p->alive, 'edges: the proxy is still running');
	ok(flush_sink($p->port), 'edges: another session works');
	ok(not_at_sink($id2) && not_at_sink($id3) && not_at_sink($id4), 'edges: nothing discarded, unkept or dropped was delivered');
	stop_proxy($p, 'edge-case proxy exits 0');
}

# --- BDAT into a holding chain (CHUNKING added in front of smtp-sink)
{
	my $p = chain_proxy('bdat', tf_block(tag => 'bdat', trace => 'true'),
	    qq{ehlo { add = [ "CHUNKING" ]; }\n});
	my $c = smtp_connect($p->port);
	$c->read_reply;
	my $e = $c->ehlo('chunky.client.test');
	ok((grep { $_ eq 'CHUNKING' } ehlo_keywords($e)), 'bdat: CHUNKING offered');
	my $id = uid('bdat');
	my $body = ".dot first\r\n..two dots\r\nmiddle\r\n.\r\nend\r\n";
	my $msg = make_message(id => $id, subject => 'bdat into the chain', body => $body);
	my $nh = () = $msg =~ /^[A-Za-z-]+:/mg;
	$c->send("MAIL FROM:<bdat\@client.test>\r\nRCPT TO:<bdat\@example.test>\r\n");
	reply_ok($c->read_reply, 250, undef, 'bdat: MAIL');
	reply_ok($c->read_reply, 250, undef, 'bdat: RCPT');
	my $cut1 = index($msg, "\r\n\r\n") + 1;		# inside the CRLF before the separator
	my $cut2 = index($msg, "middle\r\n") + 7;	# between CR and LF
	my @sizes = ($cut1, $cut2 - $cut1, length($msg) - $cut2);
	my ($off, @r) = (0);
	for my $i (0 .. $#sizes) {
		my $last = $i == $#sizes ? ' LAST' : '';
		$c->send("BDAT $sizes[$i]$last\r\n" . substr($msg, $off, $sizes[$i]));
		$off += $sizes[$i];
		push @r, $c->read_reply;
	}
	is_deeply([map { $_->{code} // 'none' } @r], [250, 250, 250], 'bdat: three chunks, each 250');
	is(raw($r[-1]), "250 2.0.0 Ok\r\n", 'bdat: the last chunk gets the backend\'s reply');
	$c->quit;
	my ($m) = at_sink($id);
	my $trace = "X-Testfilter-bdat: helo=chunky.client.test from=bdat\@client.test rcpts=1 " .
	    "headers=$nh body=" . length($body) . "\r\n";
	(my $want = $msg) =~ s/\r\n\r\n/\r\n$trace\r\n/;
	is($m && $m->{message}, to_lf($want),
	    'bdat: the module saw every header and the body octets; the backend got the chunks\' content plus its trace')
	    or diag($m && $m->{message});
	stop_proxy($p, 'bdat proxy exits 0');
}

# --- a real Postfix behind a holding chain: BDAT (Postfix offers CHUNKING),
# recipients refused by a module and by Postfix, an envelope changed by
# modules, one added recipient Postfix refuses when it is replayed
SKIP: {
	skip 'a private Postfix needs root', 15 unless $> == 0;
	my $psink = start_sink(name => 'delivered');
	my $pf = start_postfix(relay_port => $psink->port,
	    rcpt_access => "/^reject\@example\\.test\$/ 550 5.7.1 Custom rejection for this test\n");
	my $p = start_proxy(<<"EOF" . tf_block(tag => 'pf', trace => 'true', reject_rcpt => 'nobody@example.test',
backend = "127.0.0.1:@{[ $pf->port ]}";
spool_dir = "$dir";
timeout { shutdown = 5; }
EOF
	    change_from => 'changed@client.test', add_rcpt => 'added@example.test') .
	    tf_block(tag => 'pf2', add_rcpt => 'reject@example.test'), name => 'postfix-chain');
	my $c = smtp_connect($p->port);
	$c->read_reply;
	my $e = $c->ehlo('pf.client.test');
	ok((grep { $_ eq 'CHUNKING' } ehlo_keywords($e)), 'postfix: CHUNKING is offered (Postfix has it)')
	    or diag($e->{raw});
	my $id = uid('postfix');
	my $body = ".leading dot\r\n8-bit \xc4 line\r\nlast\r\n";
	my $msg = make_message(id => $id, subject => 'bdat through Postfix', body => $body);
	$c->send("MAIL FROM:<pf\@client.test>\r\nRCPT TO:<keep\@example.test>\r\n" .
	    "RCPT TO:<nobody\@example.test>\r\nRCPT TO:<reject\@example.test>\r\n");
	my @r = map { $c->read_reply } 1 .. 4;
	reply_ok($r[0], 250, '2.1.0', 'postfix: MAIL');
	reply_ok($r[1], 250, '2.1.5', 'postfix: RCPT keep@ accepted by Postfix');
	is(raw($r[2]), "550 5.7.1 pf: recipient refused\r\n", 'postfix: RCPT nobody@ refused by the module');
	like(raw($r[3]), qr/\A550 5\.7\.1 <reject\@example\.test>: Recipient address rejected: Custom rejection for this test\r\n\z/,
	    'postfix: RCPT reject@ refused by Postfix, its text relayed');
	my $half = int(length($msg) / 2);
	$c->send("BDAT $half\r\n" . substr($msg, 0, $half));
	reply_ok($c->read_reply, 250, undef, 'postfix: first chunk taken by the proxy');
	$c->send('BDAT ' . (length($msg) - $half) . " LAST\r\n" . substr($msg, $half));
	my $end = $c->read_reply(30);
	like(raw($end), qr/\A250 2\.0\.0 Ok: queued as [0-9A-Z]+\r\n\z/, 'postfix: BDAT LAST: Postfix\'s own "queued as"');
	$c->quit;
	my ($m) = $psink->wait_find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m, 30);
	ok($m, 'postfix: delivered') or diag($pf->maillog);
	my $got = $m ? $m->{message} : '';
	ok($got =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//, 'postfix: with Postfix\'s Received header on top');
	my $trace = "X-Testfilter-pf: helo=pf.client.test from=pf\@client.test rcpts=2 headers=7 body=" .
	    length($body) . "\r\n";
	(my $want = $msg) =~ s/\r\n\r\n/\r\n$trace\r\n/;
	is($got, to_lf($want), 'postfix: the message as the module left it (trace added), 8-bit and dots intact');
	is($m && $m->{mail} =~ s/ .*//r, '<changed@client.test>', 'postfix: delivered with the sender the module set');
	is_deeply([sort map { s/ .*//r } @{ $m ? $m->{rcpt} : [] }], ['<added@example.test>', '<keep@example.test>'],
	    'postfix: to the kept and the added recipients (in Postfix\'s order); not to the refused ones');
	like($p->wait_log(qr/(backend refused added recipient <reject\@example\.test>[^\n]*)/) // '',
	    qr/Custom rejection/, 'postfix: the added recipient Postfix refused is logged, the message still goes');
	stop_proxy($p, 'postfix chain proxy exits 0');
}

# --- a chain without message hooks streams: spool_dir does not even exist
{
	my $nodir = "$dir/no-such-directory";
	my $stream = chain_proxy('stream', tf_block(tag => 'env', hooks => ['mail', 'rcpt'], needs => [],
	    reject_rcpt => 'nobody@example.test'), qq{spool_dir = "$nodir";\n});
	my $held = chain_proxy('held', tf_block(tag => 'held'), qq{spool_dir = "$nodir";\n});
	my $id = uid('streamed');
	my $mb = ('s' x 78 . "\r\n") x 13500;		# over 1 MB
	my $big = make_message(id => $id, subject => 'one megabyte', body => $mb);
	my $c = ehlo_client($stream->port);
	my $r = $c->send_mail(from => 'stream@client.test', to => ['nobody@example.test', 'st@example.test'],
	    data => $big);
	is(raw($r->{rcpt}[0]), "550 5.7.1 env: recipient refused\r\n", 'stream: the rcpt hook still runs');
	reply_ok($r->{data}, 354, undef, 'stream: DATA');
	is(raw($r->{end}), "250 2.0.0 Ok\r\n",
	    'stream: 1 MB goes through with spool_dir missing: the message was never held');
	$c->quit;
	my ($m) = at_sink($id);
	is($m && $m->{message}, to_lf($big), 'stream: and arrives unchanged');
	is_deeply($m && $m->{rcpt}, ['<st@example.test>'], 'stream: to the accepted recipient only');

	# The same message through a holding chain cannot spill: 452.
	$c = ehlo_client($held->port);
	my $id2 = uid('held');
	$r = $c->send_mail(from => 'held@client.test', to => 'st@example.test',
	    data => make_message(id => $id2, subject => 'held megabyte', body => $mb));
	is(raw($r->{end}), "452 4.3.1 Error: insufficient system storage\r\n",
	    'stream: the holding chain with spool_dir missing gives 452 (so the first was not held)');
	my $l = $held->wait_log(qr/(from=<held\@client\.test>[^\n]* status=[^\n]*)/);
	like($l // '', qr/ status=deferred /, 'held: logged as deferred');
	reply_ok($c->cmd('RSET'), 250, undef, 'held: the session goes on');
	$c->quit;
	ok(flush_sink($stream->port) && not_at_sink($id2), 'held: nothing reached the backend');
	stop_proxy($stream, 'streaming proxy exits 0');
	stop_proxy($held, 'holding proxy exits 0');
}

# --- 50 MB through a body-scanning chain, memory bounded
{
	my $p = chain_proxy('big', tf_block(tag => 'big', needs => ['body'], trace => 'true'),
	    "limits { max_message_size = 0; }\n");
	my $line = ('0123456789' x 7) . "abcdefgh\r\n";		# 80 octets
	my $block = $line x 8192;				# 640 KiB per write
	my $nblocks = 80;					# 50 MiB
	my $id = uid('fifty');
	my $header = make_message(id => $id, subject => 'fifty megabytes', body => '');
	my $trailer = "the last line\r\n";
	my $bodylen = $nblocks * length($block) + length($trailer);
	my $c = smtp_connect($p->port, timeout => 120);
	$c->read_reply;
	$c->ehlo('big.client.test');
	my $r = $c->begin_data(from => 'big@client.test', to => 'big@example.test');
	reply_ok($r->{data}, 354, undef, '50 MB: DATA');
	my $ok = $c->send($header);
	for (1 .. $nblocks) {
		last unless $ok;
		$ok = $c->send($block);
	}
	$ok &&= $c->send($trailer . ".\r\n");
	ok($ok, '50 MB: written to the proxy');
	my $end = $c->read_reply(120);
	reply_ok($end, 250, '2.0.0', '50 MB: accepted by the backend');
	$c->quit;
	my $hwm = $p->vmhwm;
	SKIP: {
		skip "built with AddressSanitizer (VmHWM " . ($hwm // '?') . " kB)", 1
		    if SmtpChainTest::sanitized();
		ok(defined $hwm && $hwm < 64 * 1024, '50 MB: the proxy\'s peak RSS stayed under 64 MB (VmHWM ' .
		    ($hwm // '?') . ' kB)');
	}
	my ($f) = SmtpChainTest::wait_until(sub {
		my @f = grep { index(slurp_head($_), "<$id\@client.test>") >= 0 } $sink->files;
		return $f[0];
	}, 60, 0.2);
	ok($f, '50 MB: the sink has it');
	my $head = $f ? slurp_head($f) : '';
	my ($trace) = $head =~ /^(X-Testfilter-big: [^\n]*\n)/m;
	{
		is($trace, "X-Testfilter-big: helo=big.client.test from=big\@client.test rcpts=1 headers=7 body=$bodylen\n",
		    '50 MB: the module saw every body octet');
	}
	my $want = length(to_lf($header)) + length($trace // '') + $bodylen - ($nblocks * 8192 + 1);
	my ($got, $last) = $f ? dump_size($f) : (undef, undef);
	{
		is($got, $want, "50 MB: delivered size is right ($want octets in LF form)");
	}
	{
		is($last, 'the last line', '50 MB: it ends with the last line sent');
	}
	unlink $f if $f;
	stop_proxy($p, '50 MB proxy exits 0');
}

# --- header sections held by many sessions: spilled past spool_memory
# (issue 12, item 8).  NSESS sessions each send a header section near
# limits.max_header_size (200,000 headers "X:1", 1 MB on the wire) and stop
# before the final dot: every section is held at once.  Once the proxy has
# read every byte (its sockets' receive queues and the clients' send queues
# empty, from /proc/net/tcp), the worker's RSS is read: with spool_memory =
# 4096 the header sections are on disk and each session keeps a small index
# and one block; with spool_memory = 64 MiB (in memory) each keeps about
# 2.2 MB.  Then the dots: every message goes through a header filter and
# reaches the sink whole, both ways.
sub proxy_queues_empty {
	my ($port, $n) = @_;
	my $hex = sprintf('%04X', $port);
	my ($server, $busy) = (0, 0);
	for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
		open(my $fh, '<', $f) or next;
		while (<$fh>) {
			my (undef, $local, $remote, $st, $q) = split ' ';
			next unless defined $q && $st eq '01';
			my ($tx, $rx) = map { hex } split /:/, $q;
			if ($local =~ /:$hex\z/) {
				$server++;
				$busy++ if $rx > 0;
			} elsif ($remote =~ /:$hex\z/) {
				$busy++ if $tx > 0;
			}
		}
	}
	return $server >= $n && !$busy;
}

sub worker_rss_kb {
	my ($p) = @_;
	my $max;
	for my $pid ($p->worker_pids) {
		my $s = SmtpChainTest::slurp("/proc/$pid/status") // next;
		$max = $1 if $s =~ /^VmRSS:\s+(\d+)\s+kB/m && (!defined $max || $1 > $max);
	}
	return $max;
}

my %held_rss;
for my $mode ('memory', 'spilled') {
	my $NSESS = $SmtpChainTest::VALGRIND ? 3 : 20;
	my $NHDR = 200_000;
	my $mem = $mode eq 'spilled' ? 4096 : 67108864;
	my $p = chain_proxy("held-$mode", tf_block(tag => "held$mode", needs => ['headers'],
	    hooks => ['header', 'eom'], add_header => 'X-Held: yes'),
	    "workers = 1;\nlimits { spool_memory = $mem; }\n");
	my $wait = 300;
	my (@c, @id);
	SmtpChainTest::wait_until(sub { defined worker_rss_kb($p) }, 60);
	my $rss0 = worker_rss_kb($p);
	my $headers = "X:1\r\n" x $NHDR;
	for my $i (1 .. $NSESS) {
		my $c = smtp_connect($p->port, timeout => $wait);
		$c->read_reply;
		$c->ehlo('held.client.test');
		my $r = $c->begin_data(from => 'held@client.test', to => 'held@example.test');
		last unless $r->{ok};
		push @id, uid("held$mode");
		my $msg = make_message(id => $id[-1], subject => "held $mode $i", body => "body $i\r\n");
		$msg =~ s/\r\n\r\n/\r\n$headers\r\n/;
		$c->send($msg) or last;
		push @c, $c;
	}
	is(scalar @c, $NSESS, "held $mode: $NSESS sessions hold a 1 MB header section each");
	ok(SmtpChainTest::wait_until(sub { proxy_queues_empty($p->port, $NSESS) }, $wait, 0.2),
	    "held $mode: the proxy read every byte");
	my $rss = worker_rss_kb($p);
	$held_rss{$mode} = defined $rss && defined $rss0 ? ($rss - $rss0) / $NSESS : undef;
	diag(sprintf("held %s: worker RSS %s -> %s kB with %d sessions: %s kB a session",
	    $mode, $rss0 // '?', $rss // '?', $NSESS,
	    defined $held_rss{$mode} ? sprintf('%.0f', $held_rss{$mode}) : '?'));
	if ($mode eq 'spilled') {
		SKIP: {
			skip 'RSS under valgrind or a sanitizer says nothing here', 1 if SmtpChainTest::sanitized();
			ok(defined $held_rss{$mode} && $held_rss{$mode} < 400,
			    'held spilled: under 400 kB of worker RSS a session (' .
			    sprintf('%.0f', $held_rss{$mode} // -1) . ' kB; in memory ' .
			    sprintf('%.0f', $held_rss{memory} // -1) . ' kB)');
		}
	}
	my $t0 = time;
	$_->send(".\r\n") for @c;
	my $n250 = 0;
	for my $c (@c) {
		my $end = $c->read_reply($wait);
		$n250++ if $end && $end->{code} && $end->{code} == 250;
		$c->quit;
	}
	my $t = time - $t0;
	is($n250, $NSESS, "held $mode: every message accepted after the header filter");
	diag(sprintf("held %s: %d messages of %d headers through the header filter in %.2f s",
	    $mode, $NSESS, $NHDR, $t));
	my ($f) = SmtpChainTest::wait_until(sub {
		my @f = grep { index(slurp_head($_), "<$id[0]\@client.test>") >= 0 } $sink->files;
		return $f[0];
	}, $wait, 0.2);
	my $got = $f ? SmtpChainTest::slurp($f) // '' : '';
	my $nx = () = $got =~ /^X:1\r?$/mg;
	is($nx, $NHDR, "held $mode: the sink got all $NHDR headers");
	like($got, qr/^X-Held: yes$/m, "held $mode: and the filter's header");
	stop_proxy($p, "held $mode: proxy exits 0");
}

# The first 64 KiB of a file.
sub slurp_head {
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return '';
	read($fh, my $h, 65536);
	return $h // '';
}

# The size of the message in a sink dump file and its last line, read
# without loading the file (as in t/50-load.t).
sub dump_size {
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return (undef, undef);
	read($fh, my $head, 65536);
	my $hlen = 0;
	$hlen += length $1 while $head =~ s/\A(X-[A-Za-z-]+: [^\n]*\n)//;
	$hlen += length $1 if $head =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//;
	my $total = -s $file;
	seek($fh, -200, 2);
	read($fh, my $tail, 200);
	close $fh;
	my ($last) = $tail =~ /([^\n]*)\n\n\z/;
	return ($total - $hlen - 1, $last);
}

# A quarantine file never replaces one already there.  Message ids start
# again in every proxy (worker 1's first session is 100000001), so two
# instances sharing quarantine_dir, or a restart within the second, give
# the same MSGID.TIME: each name this proxy could pick for the next few
# minutes already holds a file, which must stay as it was; the message
# goes to MSGID.TIME-1.eml.
{
	my $qd = "$dir/quarantine-taken";
	make_path($qd);
	my $now = time;
	my @taken;
	for my $sid (1 .. 4) {
		for my $t ($now - 2 .. $now + 300) {
			my $f = sprintf('%s/10000000%d.1.%d.eml', $qd, $sid, $t);
			spew($f, "precious $sid $t\n");
			push @taken, $f;
		}
	}
	my $pq = chain_proxy('taken', tf_block(verdict_subject => [ 'HOLDME=quarantine' ]),
	    qq{workers = 1;\nquarantine_dir = "$qd";\n});
	my $c = ehlo_client($pq->port);
	my $msg = make_message(id => uid('taken'), subject => 'HOLDME taken');
	my $r = $c->send_mail(from => 'taken@client.test', to => 'q@example.test', data => $msg);
	like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as 10000000\d\.1\r\n\z/,
	    'quarantine name taken: 250 queued as MSGID');
	$c->quit;
	my ($name) = raw($r->{end}) =~ /queued as (\S+)\r\n/;
	my $file = defined $name ? $pq->wait_log(qr/: quarantined as (\S+\/\Q$name\E\.\S+)/) : undef;
	like($file // '', qr{/\Q$name\E\.\d+-1\.eml\z}, 'quarantine name taken: the message goes to MSGID.TIME-1.eml')
	    or diag($pq->log_tail);
	like($file && -f $file ? slurp($file) : '', qr/^Subject: HOLDME taken\r$/m, 'quarantine name taken: that file has the message');
	is(scalar(grep { (slurp($_) // '') !~ /\Aprecious \d+ \d+\n\z/ } @taken), 0,
	    'quarantine name taken: every file already there is untouched');
	stop_proxy($pq, 'quarantine name taken: proxy exits 0');
}

stop_proxy($pv, 'verdict proxy exits 0');
stop_proxy($pvp, 'pending verdict proxy exits 0');
stop_proxy($pc, 'change proxy exits 0');
stop_proxy($pcp, 'pending change proxy exits 0');
done_testing;
