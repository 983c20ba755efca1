# 61-regex.t - the regex module (Postfix header_checks, body_checks and
# access tables) and the headers module, end to end.
#
# Each table action is checked by what the client is told (exact replies,
# the rule's text) and by what smtp-sink receives (envelope and message,
# exact headers), or by the quarantine file for HOLD.  Then: the headers
# module (remove, rewrite, add, its Received: line), a chain where headers
# sees the regex module's changes, an access-only regex instance that lets
# messages stream, three regex blocks told apart by their names in the
# log and the quarantine header, a large message scanned by body_checks in bounded
# memory, and table errors reported by `smtpchain -t` with the table's
# FILE:LINE.
use strict;
use warnings;

use Test::More;
use File::Path qw(make_path);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $RX = "$BUILD/filters/regex/.libs/regex.so";
my $HD = "$BUILD/filters/headers/.libs/headers.so";
plan skip_all => "$RX or $HD is not built" unless -f $RX && -f $HD;

my $dir = tmpdir();

# Stop a proxy: SIGTERM must make it exit 0 with no sanitizer report.
sub stop_proxy {
	my ($p, $name) = @_;
	$p->stop_ok($name);
}

my $QDIR = "$dir/quarantine";
make_path($QDIR);

# --- the tables (tabs and spaces between pattern and action, as people write them)
my $HC = spew("$dir/header_checks", <<'EOF');
# header_checks for t/61-regex.t
/^Subject:.*forbidden word/	REJECT Message refused: no forbidden words here
/^Subject:.*defer me/		REJECT 4.7.1 Try again later please
/^Subject:.*custom code/	REJECT 554 5.7.9 Custom code and text
/^Subject:.*drop me/		DISCARD dropped by header rule
/^Subject:.*hold me/		HOLD held by header rule

/^X-Folded:.*alpha.*omega/	REJECT Folded header matched as one
/^X-Wrapped: first\n\tsecond$/	REJECT 5.7.2 Folding seen as LF and tab
/^X-Prepend-Here:/		PREPEND X-Prepended: before the matched header
/^X-Mailer: (.*)$/		REPLACE X-Mailer: hidden (was $1)
/^X-Secret:/			IGNORE
/^X-Warn-Me:/			WARN suspicious header
if /^X-Cond:/
/secret-value/			REJECT Conditional rule matched
endif
/^X-Drop-[0-9]+ ?:/		IGNORE
EOF
my $BC = spew("$dir/body_checks", <<'EOF');
# body_checks
/^this line is forbidden$/	REJECT Body line refused
/^discard by body$/		DISCARD
/^hold by body$/		HOLD
EOF
my $CC = spew("$dir/client_checks", <<'EOF');
/^127\.0\.0\.3$/	REJECT Client not welcome
/^127\.0\.0\.4$/	PREPEND X-Client-Note: from 127.0.0.4
/^127\.0\.0\.5$/	DISCARD
EOF
my $HH = spew("$dir/helo_checks", <<'EOF');
/^bad\.helo\.test$/	REJECT
/^defer\.helo\.test$/	DEFER Helo deferred
EOF
my $SC = spew("$dir/sender_checks", <<'EOF');
/^spammer@client\.test$/	REJECT Sender refused here
/^(prepend)@client\.test$/	PREPEND X-Sender-Note: prepended for $1
EOF
my $RC = spew("$dir/recipient_checks", <<'EOF');
/^blocked@example\.test$/	REJECT Recipient blocked
/^later@example\.test$/		DEFER_IF_PERMIT Try later
/^numeric@example\.test$/	553 5.1.1 No such user here
/^ok@example\.test$/		OK
EOF

my $sink = start_sink();
my $bport = $sink->port;

# A proxy in front of the sink with this chain.
sub chain_proxy {
	my ($name, $chain, $extra) = @_;
	$extra //= '';
	$extra .= qq{spool_dir = "$dir";\n} unless $extra =~ /^spool_dir\b/m;
	return start_proxy(<<"EOF" . $extra . $chain, name => $name);
backend = "127.0.0.1:$bport";
quarantine_dir = "$QDIR";
log { level = "info"; }
timeout { command = 60; data = 60; backend = 60; connect = 10; shutdown = 5; }
EOF
}

sub ehlo_client {
	my ($port, %o) = @_;
	my $c = smtp_connect($port, %o) or die "connect to $port: $@\n";
	$c->read_reply;
	$c->ehlo($o{helo} || 'client.test');
	return $c;
}

sub raw { my ($r) = @_; return $r ? $r->{raw} // '' : '' }

my $seq = 0;
sub uid { return sprintf('%s-%d-%d', $_[0], $$, ++$seq) }

sub at_sink {
	my ($id, $timeout) = @_;
	return $sink->wait_find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m, $timeout);
}

sub not_at_sink {
	my ($id) = @_;
	return !$sink->find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m);
}

# A marker message, waited for: what the proxy relayed before it is dumped.
sub flush_sink {
	my ($port) = @_;
	my $id = uid('marker');
	my $c = ehlo_client($port);
	$c->send_mail(from => 'marker@client.test', to => 'marker@example.test',
	    data => make_message(id => $id, subject => 'marker'));
	$c->quit;
	return at_sink($id) ? 1 : 0;
}

# A message with extra headers (a string of CRLF lines) after make_message's.
sub with_headers {
	my ($extra, %o) = @_;
	return make_message(%o) =~ s/\r\n\r\n/\r\n$extra\r\n/r;
}

my $rx = chain_proxy('regex', <<"EOF");
filter {
    module = "$RX";
    header_checks = "$HC";
    body_checks = "$BC";
    client_checks = "$CC";
    helo_checks = "$HH";
    sender_checks = "$SC";
    recipient_checks = "$RC";
}
EOF
my $port = $rx->port;

# --- header_checks: refusals, one message each, one session
{
	my $c = ehlo_client($port);
	my @cases = (
		['forbidden word', "550 5.7.1 Message refused: no forbidden words here\r\n", 'rejected',
		    'REJECT text: 550 5.7.1 and the rule\'s text'],
		['defer me', "451 4.7.1 Try again later please\r\n", 'deferred',
		    'REJECT 4.7.1 text: a temporary 451'],
		['custom code', "554 5.7.9 Custom code and text\r\n", 'rejected',
		    'REJECT 554 5.7.9 text: that code and enhanced code'],
		['drop me', qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'discarded', 'DISCARD: 250 "Ok: queued as MSGID", as for a relayed message'],
	);
	my @ids;
	for my $case (@cases) {
		my ($subj, $want, $status, $what) = @$case;
		my $id = uid('hc');
		push @ids, $id;
		my $from = "hc$seq\@client.test";
		my $r = $c->send_mail(from => $from, to => 'r@example.test',
		    data => make_message(id => $id, subject => "a $subj in the subject"));
		ref $want ? like(raw($r->{end}), $want, "header_checks $what") : is(raw($r->{end}), $want, "header_checks $what");
		my $l = $rx->wait_log(qr/(from=<\Q$from\E>[^\n]* status=[^\n]*)/);
		like($l // '', qr/ status=$status filter=regex /, "header_checks $subj: logged as $status by regex")
		    or diag($rx->log_tail);
	}
	# A folded header is matched as one logical line ("Name:value", CRLF as LF).
	my $id = uid('folded');
	push @ids, $id;
	my $r = $c->send_mail(from => 'fold@client.test', to => 'r@example.test',
	    data => with_headers("X-Folded: alpha is here\r\n\tand omega on the next line\r\n", id => $id));
	is(raw($r->{end}), "550 5.7.1 Folded header matched as one\r\n",
	    'header_checks: a rule spanning the folding of a header matches');
	$id = uid('wrapped');
	push @ids, $id;
	$r = $c->send_mail(from => 'wrap@client.test', to => 'r@example.test',
	    data => with_headers("X-Wrapped: first\r\n\tsecond\r\n", id => $id));
	is(raw($r->{end}), "550 5.7.2 Folding seen as LF and tab\r\n",
	    'header_checks: the folding is seen as LF + tab (/first\n\tsecond$/)');
	# if /^X-Cond:/ ... endif
	$id = uid('cond');
	push @ids, $id;
	$r = $c->send_mail(from => 'cond@client.test', to => 'r@example.test',
	    data => with_headers("X-Cond: has secret-value inside\r\n", id => $id));
	is(raw($r->{end}), "550 5.7.1 Conditional rule matched\r\n", 'header_checks: a rule inside if..endif applies');
	my $idc = uid('cond-not');
	$r = $c->send_mail(from => 'cond2@client.test', to => 'r@example.test',
	    data => with_headers("X-Other: has secret-value inside\r\n", id => $idc));
	reply_ok($r->{end}, 250, '2.0.0', 'header_checks: not when the if does not match');
	$c->quit;
	ok(at_sink($idc), 'header_checks: that one is delivered');
	ok(flush_sink($port), 'marker message through');
	ok(!(grep { !not_at_sink($_) } @ids), 'none of the refused or discarded messages reached the backend');
}

# --- header_checks: HOLD keeps the message in quarantine_dir
{
	my $c = ehlo_client($port);
	my $id = uid('hold');
	my $msg = make_message(id => $id, subject => 'please hold me', body => "held body\r\n");
	my $r = $c->send_mail(from => 'hold@client.test', to => 'r@example.test', data => $msg);
	like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'header_checks HOLD: 250 "queued as MSGID"');
	my ($name) = raw($r->{end}) =~ /queued as (\S+)\r\n/;
	my ($file) = defined $name ? glob("$QDIR/$name.*.eml") : ();
	my $q = $file ? slurp($file) // '' : '';
	like($q, qr/\AX-Smtpchain-Quarantine: session=\S+ client=\[127\.0\.0\.1\]:\d+ helo=<client\.test> filter=regex\r\n/,
	    'HOLD: the quarantine file names the regex module') or diag($q);
	(my $rest = $q) =~ s/\AX-Smtpchain-Quarantine: [^\n]*\n//;
	{
		is($rest, "X-Smtpchain-Envelope-From: <hold\@client.test>\r\nX-Smtpchain-Envelope-To: <r\@example.test>\r\n" . $msg,
		    'HOLD: envelope lines and the message, exactly');
	}
	# A later REJECT still wins over HOLD (Postfix does the same).
	my $id2 = uid('hold-then-reject');
	$r = $c->send_mail(from => 'hold2@client.test', to => 'r@example.test',
	    data => make_message(id => $id2, subject => 'hold me', body => "ok\r\nthis line is forbidden\r\n"));
	is(raw($r->{end}), "550 5.7.1 Body line refused\r\n", 'HOLD then a body REJECT: the REJECT wins');
	$c->quit;
	ok(flush_sink($port) && not_at_sink($id) && not_at_sink($id2), 'HOLD: nothing reached the backend');
}

# --- header_checks: PREPEND, REPLACE, IGNORE, WARN; exact headers at the sink
{
	my $c = ehlo_client($port);
	my $id = uid('edits');
	my $head = "From: <e\@client.test>\r\nTo: <r\@example.test>\r\nSubject: edits\r\n" .
	    "Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$id\@client.test>\r\n";
	my $msg = $head . "X-Prepend-Here: yes\r\nX-Mailer: Mutt 2.0\r\nX-Secret: s3cret\r\n" .
	    "X-Warn-Me: hmm\r\nX-Secret: again\r\nX-Mailer: second\r\n\r\nbody\r\n";
	my $r = $c->send_mail(from => 'e@client.test', to => 'r@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', 'header edits: accepted');
	$c->quit;
	my ($m) = at_sink($id);
	{
		is($m && $m->{message}, to_lf($head . "X-Prepended: before the matched header\r\nX-Prepend-Here: yes\r\n" .
		    "X-Mailer: hidden (was Mutt 2.0)\r\nX-Warn-Me: hmm\r\nX-Mailer: hidden (was second)\r\n\r\nbody\r\n"),
		    'PREPEND before the matched header, REPLACE in place (each occurrence, $1), IGNORE both X-Secret')
		    or diag($m && $m->{message});
	}
	like($rx->wait_log(qr/(warning: [^\n]*header_checks [^\n]*WARN header X-Warn-Me[^\n]*)/) // '',
	    qr/\Q$HC\E:13: WARN header X-Warn-Me: hmm: suspicious header/,
	    'WARN: logged with the table, its line, the header and the text');
}

# --- IGNORE on thousands of headers of distinct names (changed by index, last
# first: one walk of the list), between headers that stay, obs-fields too
{
	my $c = ehlo_client($port);
	my $id = uid('many-drops');
	my ($in, $kept) = ('', '');
	for my $i (1 .. 3000) {
		$in .= "X-Drop-$i" . ($i % 7 ? '' : ' ') . ": d$i\r\nX-Keep-$i: k$i\r\n";
		$kept .= "X-Keep-$i: k$i\r\n";
	}
	my $msg = with_headers($in, id => $id, subject => 'many drops');
	my $r = $c->send_mail(from => 'e@client.test', to => 'r@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', '3000 headers to IGNORE: accepted');
	$c->quit;
	my ($m) = at_sink($id);
	is($m && $m->{message}, to_lf($msg =~ s/\Q$in\E/$kept/r),
	    'every X-Drop-N removed, every X-Keep-N kept in order') or diag($m && substr($m->{message}, 0, 300));
}

# --- a 100 KB header line and a 100 KB body line pass intact when no rule matches
{
	my $c = ehlo_client($port);
	my $id = uid('long');
	my $long = join('', map { chr(ord('a') + $_ % 26) } 0 .. 102399);
	my $msg = with_headers("X-Long: $long\r\n", id => $id, subject => 'long lines',
	    body => "before\r\n$long\r\nafter\r\n");
	my $r = $c->send_mail(from => 'long@client.test', to => 'r@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', '100 KB header line: accepted');
	$c->quit;
	my ($m) = at_sink($id);
	{
		ok($m && $m->{message} eq to_lf($msg), '100 KB header line and body line: delivered byte for byte')
		    or diag($m ? 'delivered ' . length($m->{message}) . ' octets, sent (LF) ' . length(to_lf($msg)) : 'not delivered');
	}
}

# --- body_checks
{
	my $c = ehlo_client($port);
	my $id1 = uid('body-reject');
	my $r = $c->send_mail(from => 'b1@client.test', to => 'r@example.test',
	    data => make_message(id => $id1, subject => 'body', body => "fine\r\nthis line is forbidden\r\nmore\r\n"));
	is(raw($r->{end}), "550 5.7.1 Body line refused\r\n", 'body_checks REJECT on a line');
	my $id2 = uid('body-not');
	$r = $c->send_mail(from => 'b2@client.test', to => 'r@example.test',
	    data => make_message(id => $id2, subject => 'body',
	    body => "this line is forbidden too\r\nnot this line is forbidden\r\n"));
	reply_ok($r->{end}, 250, '2.0.0', 'body_checks: lines that only contain the text pass (the rule is anchored)');
	my $id3 = uid('body-last');
	$r = $c->send_mail(from => 'b3@client.test', to => 'r@example.test',
	    raw_data => dot_stuff(make_message(id => $id3, subject => 'body', body => "x\r\nthis line is forbidden")) . "\r\n");
	is(raw($r->{end}), "550 5.7.1 Body line refused\r\n", 'body_checks: the last line of the body counts');
	my $id4 = uid('body-discard');
	$r = $c->send_mail(from => 'b4@client.test', to => 'r@example.test',
	    data => make_message(id => $id4, subject => 'body', body => "discard by body\r\n"));
	like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'body_checks DISCARD');
	my $id5 = uid('body-header-lookalike');
	$r = $c->send_mail(from => 'b5@client.test', to => 'r@example.test',
	    data => make_message(id => $id5, subject => 'body', body => "Subject: forbidden word\r\n"));
	reply_ok($r->{end}, 250, '2.0.0', 'header_checks do not look at the body');
	$c->quit;
	ok(at_sink($id2) && at_sink($id5), 'the passing ones are delivered');
	ok(not_at_sink($id1) && not_at_sink($id3) && not_at_sink($id4), 'the others are not');
}

# --- access tables: client, helo, sender, recipient
{
	my $c = smtp_connect($port, local_addr => '127.0.0.3') or die "connect: $@\n";
	is(raw($c->read_reply), "554 5.7.1 Client not welcome\r\n", 'client_checks REJECT: 554 at connect');
	ok($c->wait_closed(10), 'client_checks REJECT: then closed');
	$c->close;

	$c = smtp_connect($port);
	$c->read_reply;
	is(raw($c->ehlo('bad.helo.test')), "554 5.7.1 Access denied\r\n", 'helo_checks REJECT without text: "Access denied"');
	is(raw($c->ehlo('defer.helo.test')), "450 4.7.1 Helo deferred\r\n", 'helo_checks DEFER: 450 4.7.1');
	reply_ok($c->ehlo('client.test'), 250, undef, 'then a good EHLO');
	is(raw($c->cmd('MAIL FROM:<spammer@client.test>')), "554 5.7.1 Sender refused here\r\n",
	    'sender_checks REJECT: 554 5.7.1 and its text');
	my $id = uid('rcpt-checks');
	my $msg = make_message(id => $id, subject => 'recipient checks');
	my $r = $c->send_mail(from => 'prepend@client.test',
	    to => ['blocked@example.test', 'later@example.test', 'numeric@example.test', 'ok@example.test', 'plain@example.test'],
	    data => $msg);
	is(raw($r->{rcpt}[0]), "554 5.7.1 Recipient blocked\r\n", 'recipient_checks REJECT');
	is(raw($r->{rcpt}[1]), "450 4.7.1 Try later\r\n", 'recipient_checks DEFER_IF_PERMIT: 450 4.7.1');
	is(raw($r->{rcpt}[2]), "553 5.1.1 No such user here\r\n", 'recipient_checks "553 5.1.1 text"');
	reply_ok($r->{rcpt}[3], 250, undef, 'recipient_checks OK: relayed');
	reply_ok($r->{rcpt}[4], 250, undef, 'no rule: relayed');
	reply_ok($r->{end}, 250, '2.0.0', 'the message goes to the accepted recipients');
	$c->quit;
	my ($m) = at_sink($id);
	is_deeply($m && $m->{rcpt}, ['<ok@example.test>', '<plain@example.test>'], 'the backend\'s envelope has those two');
	{
		is($m && $m->{message}, to_lf("X-Sender-Note: prepended for prepend\r\n" . $msg),
		    'sender_checks PREPEND ($1): the header on top, the rest as sent');
	}
	ok(!(grep { /spammer\@|blocked\@|later\@|numeric\@|bad\.helo|defer\.helo/ } $sink->commands),
	    'nothing refused reached the backend');

	# A connect PREPEND goes into every message of the session.
	$c = ehlo_client($port, local_addr => '127.0.0.4');
	my @ids = (uid('client-prepend'), uid('client-prepend'));
	my @msgs = map { make_message(id => $_, subject => 'client prepend') } @ids;
	reply_ok($c->send_mail(from => 'cp@client.test', to => 'r@example.test', data => $_)->{end}, 250, '2.0.0',
	    'client_checks PREPEND: message accepted') for @msgs;
	$c->quit;
	for my $i (0, 1) {
		my ($cm) = at_sink($ids[$i]);
		{
			is($cm && $cm->{message}, to_lf("X-Client-Note: from 127.0.0.4\r\n" . $msgs[$i]),
			    "client_checks PREPEND: in message @{[ $i + 1 ]} of the session");
		}
	}
	# A connect DISCARD discards every message of the session.
	$c = ehlo_client($port, local_addr => '127.0.0.5');
	my $idd = uid('client-discard');
	$r = $c->send_mail(from => 'cd@client.test', to => 'r@example.test', data => make_message(id => $idd));
	like(raw($r->{end}), qr/\A250 2\.0\.0 Ok: queued as [0-9A-F]+\.\d+\r\n\z/, 'client_checks DISCARD: the session\'s message is discarded');
	$c->quit;
	ok(flush_sink($port) && not_at_sink($idd), 'client_checks DISCARD: nothing at the backend');
}

# --- the headers module, and a chain where it sees the regex module's changes
{
	my $hp = chain_proxy('headers', <<"EOF");
filter {
    module = "$HD";
    remove = [ "X-Remove-Me", "X-Also-Remove" ];
    rewrite = [ "X-Mailer: smtpchain-test", "X-Missing: added by rewrite" ];
    add = [ "X-Scanned-By: smtpchain", "X-Second: two" ];
    received = true;
}
EOF
	my $c = ehlo_client($hp->port, helo => 'hd.client.test');
	my $id = uid('headers');
	my $head = "From: <h\@client.test>\r\nTo: <r\@example.test>\r\nSubject: headers module\r\n" .
	    "Date: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$id\@client.test>\r\n";
	my $msg = $head . "X-Remove-Me: 1\r\nx-remove-me: 2\r\nX-Mailer: Mutt\r\nX-Also-Remove: folded\r\n\tline\r\n" .
	    "X-Mailer: Other\r\n\r\nbody\r\n";
	my $r = $c->send_mail(from => 'h@client.test', to => 'r@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', 'headers: accepted');
	$c->quit;
	my ($m) = at_sink($id);
	my $got = $m ? $m->{message} : '';
	my $rcv = $got =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)// ? $1 : '';
	like($rcv, qr/\AReceived: from hd\.client\.test \(\S+ \[127\.0\.0\.1\]\)\n\tby proxy\.test \(smtpchain\) with ESMTP id [0-9A-F]+;\n\t(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\n\z/,
	    'headers received: the proxy\'s Received: line on top (HELO, client, our name, session id, date)')
	    or diag($rcv);
	{
		is($got, to_lf($head . "X-Mailer: smtpchain-test\r\nX-Mailer: smtpchain-test\r\n" .
		    "X-Missing: added by rewrite\r\nX-Scanned-By: smtpchain\r\nX-Second: two\r\n\r\nbody\r\n"),
		    'headers: every X-Remove-Me (any case) and the folded X-Also-Remove gone, both X-Mailer rewritten, a missing one added, add appended')
		    or diag($got);
	}

	my $chain = chain_proxy('regex-headers', <<"EOF");
filter {
    module = "$RX";
    header_checks = "$HC";
}
filter {
    module = "$HD";
    rewrite = [ "X-Prepended: rewritten by headers" ];
    remove = [ "X-Warn-Me" ];
}
EOF
	$c = ehlo_client($chain->port);
	$id = uid('chain');
	$msg = make_message(id => $id, subject => 'chain') =~ s/\r\n\r\n/\r\nX-Prepend-Here: 1\r\nX-Warn-Me: x\r\n\r\n/r;
	$r = $c->send_mail(from => 'ch@client.test', to => 'r@example.test', data => $msg);
	reply_ok($r->{end}, 250, '2.0.0', 'regex then headers: accepted');
	$c->quit;
	($m) = at_sink($id);
	(my $want = $msg) =~ s/X-Prepend-Here: 1\r\nX-Warn-Me: x\r\n/X-Prepended: rewritten by headers\r\nX-Prepend-Here: 1\r\n/;
	{
		is($m && $m->{message}, to_lf($want),
		    'regex then headers: headers rewrote the header regex prepended (it saw the change), and removed another')
		    or diag($m && $m->{message});
	}
	stop_proxy($hp, 'headers proxy exits 0');
	stop_proxy($chain, 'regex+headers proxy exits 0');
}

# --- three regex blocks: the log and the quarantine header name the one that decided
# (two without a name are "regex" and "regex#2"; a name key is used as given)
{
	my $hc2 = spew("$dir/header_checks2", <<'EOT');
/^Subject:.*second table/	REJECT Refused by the second table
/^Subject:.*second hold/	HOLD held by the second table
EOT
	my $p = chain_proxy('three-regex', <<"EOF");
filter {
    module = "$RX";
    header_checks = "$HC";
}
filter {
    module = "$RX";
    header_checks = "$hc2";
}
filter {
    module = "$RX";
    name = "rx-body";
    body_checks = "$BC";
}
EOF
	my $c = ehlo_client($p->port);
	for my $case (['fw', 'a forbidden word here', "ok\r\n", 'regex'],
	    ['st', 'the second table', "ok\r\n", 'regex#2'],
	    ['bd', 'body', "this line is forbidden\r\n", 'rx-body']) {
		my ($tag, $subj, $body, $who) = @$case;
		my $from = "three-$tag\@client.test";
		my $r = $c->send_mail(from => $from, to => 'r@example.test',
		    data => make_message(id => uid("three-$tag"), subject => $subj, body => $body));
		like(raw($r->{end}), qr/\A550 /, "three regex blocks: $tag refused");
		my $l = $p->wait_log(qr/(from=<\Q$from\E>[^\n]* status=[^\n]*)/);
		like($l // '', qr/ status=rejected filter=\Q$who\E reply=/, "three regex blocks: logged as filter=$who")
		    or diag($p->log_tail);
	}
	my $r = $c->send_mail(from => 'three-hold@client.test', to => 'r@example.test',
	    data => make_message(id => uid('three-hold'), subject => 'second hold'));
	my ($name) = raw($r->{end}) =~ /\A250 2\.0\.0 Ok: queued as (\S+)\r\n/;
	my ($file) = defined $name ? glob("$QDIR/$name.*.eml") : ();
	ok($file, 'three regex blocks: HOLD by the second one') or diag(raw($r->{end}));
	my $q = $file ? slurp($file) // '' : '';
	like($q, qr/\AX-Smtpchain-Quarantine: [^\r\n]* filter=regex#2\r\n/,
	    'three regex blocks: the quarantine header names regex#2') or diag($q);
	$c->quit;
	stop_proxy($p, 'three-regex proxy exits 0');
}

# --- an access-only regex instance streams (spool_dir missing: a held message would get 452)
{
	my $p = chain_proxy('access-only', <<"EOF", qq{spool_dir = "$dir/no-such-dir";\n});
filter {
    module = "$RX";
    recipient_checks = "$RC";
}
EOF
	my $c = ehlo_client($p->port);
	my $id = uid('access-stream');
	my $mb = ('a' x 78 . "\r\n") x 13500;
	my $msg = make_message(id => $id, subject => 'access only', body => $mb);
	my $r = $c->send_mail(from => 'st@client.test', to => ['blocked@example.test', 'r@example.test'], data => $msg);
	is(raw($r->{rcpt}[0]), "554 5.7.1 Recipient blocked\r\n", 'access-only: recipient_checks still apply');
	is(raw($r->{end}), "250 2.0.0 Ok\r\n", 'access-only: 1 MB streams through with spool_dir missing');
	$c->quit;
	my ($m) = at_sink($id);
	is($m && $m->{message}, to_lf($msg), 'access-only: delivered unchanged');
	stop_proxy($p, 'access-only proxy exits 0');
}

# --- a large message through body_checks, memory bounded
{
	my $p = chain_proxy('big', qq{filter {\n    module = "$RX";\n    body_checks = "$BC";\n}\n},
	    "limits { max_message_size = 0; }\n");
	my $line = ('0123456789' x 7) . "abcdefgh\r\n";	# 80 octets
	my $block = $line x 8192;			# 640 KiB
	my $nblocks = 32;				# 20 MiB
	for my $case (['clean', "the last line\r\n"], ['dirty', "this line is forbidden\r\n"]) {
		my ($what, $trailer) = @$case;
		my $id = uid("big-$what");
		my $header = make_message(id => $id, subject => "20 MB $what", body => '');
		my $c = smtp_connect($p->port, timeout => 120);
		$c->read_reply;
		$c->ehlo('big.client.test');
		my $b = $c->begin_data(from => "big-$what\@client.test", to => 'big@example.test');
		my $ok = $b->{ok} && $c->send($header);
		for (1 .. $nblocks) {
			last unless $ok;
			$ok = $c->send($block);
		}
		$ok &&= $c->send($trailer . ".\r\n");
		ok($ok, "20 MB $what: written to the proxy");
		my $end = $c->read_reply(120);
		$c->quit;
		if ($what eq 'dirty') {
			is(raw($end), "550 5.7.1 Body line refused\r\n", '20 MB: a forbidden last line, 20 MB in, is found');
			next;
		}
		reply_ok($end, 250, '2.0.0', '20 MB clean: accepted');
		my $f = SmtpChainTest::wait_until(sub {
			(grep { index(head_of($_), "<$id\@client.test>") >= 0 } $sink->files)[0];
		}, 60, 0.2);
		my $want = -s $f if $f;
		my $sent = length(to_lf($header)) + $nblocks * (length($block) - 8192) + length($trailer) - 1;
		my $hlen = $f ? dump_head_len($f) : 0;
		{
			is(defined $want ? $want - $hlen - 1 : undef, $sent, "20 MB clean: delivered size is right ($sent octets in LF form)");
		}
		unlink $f if $f;
	}
	my $hwm = $p->vmhwm;
	SKIP: {
		skip "built with AddressSanitizer (VmHWM " . ($hwm // '?') . " kB)", 1 if SmtpChainTest::sanitized();
		ok(defined $hwm && $hwm < 64 * 1024, "20 MB through body_checks: peak RSS under 64 MB (VmHWM " .
		    ($hwm // '?') . ' kB)');
	}
	stop_proxy($p, 'body_checks proxy exits 0');
}

# The first 64 KiB of a file.
sub head_of {
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return '';
	read($fh, my $h, 65536);
	return $h // '';
}

# The length of smtp-sink's own records (and its Received:) at the top of a dump.
sub dump_head_len {
	my ($file) = @_;
	my $head = head_of($file);
	my $n = 0;
	$n += length $1 while $head =~ s/\A(X-[A-Za-z-]+: [^\n]*\n)//;
	$n += length $1 if $head =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//;
	return $n;
}

# --- table errors: smtpchain -t names the table's FILE:LINE
{
	my $bin = $ENV{SMTPCHAIN};
	my $check = sub {
		my ($name, $text) = @_;
		my $conf = spew("$dir/$name.conf", qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\n$text});
		my $out = `timeout -k 5 20 \Q$bin\E -t -c \Q$conf\E 2>&1 </dev/null`;
		return ($? >> 8, $out, $conf);
	};
	my $bad = spew("$dir/bad_header_checks", "# comment\n/^Subject:/ REJECT fine\n/^From:/ BOGUS text\n");
	my ($code, $out, $conf) = $check->('table-action', qq{filter {\n    module = "$RX";\n    header_checks = "$bad";\n}\n});
	is($code, 1, 'an unknown action in header_checks: -t exits 1');
	like($out, qr/^\Q$conf\E:5: filter "\Q$RX\E": header_checks: \Q$bad\E:3: unknown action "BOGUS" in header_checks$/m,
	    'it says CONF:LINE: filter "...": header_checks: TABLE:3: unknown action') or diag($out);

	my $badre = spew("$dir/bad_pattern", "/ok/ DUNNO\n\n/(unclosed/ REJECT x\n");
	($code, $out, $conf) = $check->('table-pattern', qq{filter {\n    module = "$RX";\n    body_checks = "$badre";\n}\n});
	is($code, 1, 'a bad pattern in body_checks: -t exits 1');
	like($out, qr/^\Q$conf\E:5: filter "\Q$RX\E": body_checks: \Q$badre\E:3: bad pattern \/\(unclosed\/: /m,
	    'it names the table, line 3, and the pattern') or diag($out);

	my $badbody = spew("$dir/bad_body_checks", "/x/ PREPEND X-A: b\n");
	($code, $out, $conf) = $check->('table-body', qq{filter {\n    module = "$RX";\n    body_checks = "$badbody";\n}\n});
	is($code, 1, 'PREPEND in body_checks: -t exits 1');
	like($out, qr/\Q$badbody\E:1: PREPEND is not supported in body_checks/, 'with the reason') or diag($out);

	($code, $out, $conf) = $check->('table-missing', qq{filter {\n    module = "$RX";\n    sender_checks = "$dir/nonexistent";\n}\n});
	is($code, 1, 'a missing table: -t exits 1');
	like($out, qr/^\Q$conf\E:5: filter "\Q$RX\E": sender_checks: \Q$dir\E\/nonexistent: No such file or directory$/m,
	    'it names the missing file') or diag($out);

	($code, $out, $conf) = $check->('table-none', qq{filter {\n    module = "$RX";\n}\n});
	is($code, 1, 'a regex filter without a table: -t exits 1');
	like($out, qr/^\Q$conf\E:3: filter "\Q$RX\E": no table: /m, 'and says so') or diag($out);

	($code, $out, $conf) = $check->('headers-bad', qq{filter {\n    module = "$HD";\n    add = [ "no colon here" ];\n}\n});
	is($code, 1, 'headers: a bad add value: -t exits 1');
	like($out, qr/^\Q$conf\E:5: filter "\Q$HD\E": add: /m, 'headers: CONF:LINE: filter "...": add: ...') or diag($out);

	($code, $out, $conf) = $check->('good', qq{filter {\n    module = "$RX";\n    header_checks = "$HC";\n    body_checks = "$BC";\n}\n} .
	    qq{filter {\n    module = "$HD";\n    received = true;\n}\n});
	is($code, 0, 'the good tables and a headers block pass -t') or diag($out);
}

stop_proxy($rx, 'regex proxy exits 0');
done_testing;
