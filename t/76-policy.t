# 76-policy.t - the policy module with a scripted Postfix policy server
# (t/policy/testpolicy): the attributes of a request, every access(5)
# action at RCPT (per recipient) and at END-OF-MESSAGE, the steps, the
# per-session cache of identical requests, connection reuse and its limits,
# and the faults (no answer in time, a close in the middle of an answer,
# garbage, a 100 KB answer, an extra attribute, a server down at start),
# each ending in default_action with a log line and no lost message; and
# the example server of filters/policy/examples.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;
use Time::HiRes qw(sleep);

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/policy/.libs/policy.so";
plan skip_all => "$module is not built" unless -f $module;
my $src = SmtpChainTest::srcdir();
my $testpolicy = "$src/t/policy/testpolicy";

my $dir = tmpdir();
my $qdir = "$dir/quarantine";
mkdir $qdir;
my $scale = $SmtpChainTest::TIME_SCALE;

# Start the scripted server on a port; waits until it listens.
sub start_policy {
	my ($name, $port) = @_;
	$port //= free_port();
	my $log = "$dir/policy-$name.log";
	my $pid = SmtpChainTest::spawn(argv => ['perl', $testpolicy, $port, $log],
	    output => "$dir/policy-$name.out");
	SmtpChainTest::on_cleanup("testpolicy $name", sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	die "testpolicy $name did not come up\n" unless SmtpChainTest::port_listening($port);
	return { name => $name, port => $port, pid => $pid, log => $log };
}

# The scripted server on a unix socket.
sub start_unix_policy {
	my ($name, $sock) = @_;
	my $log = "$dir/policy-$name.log";
	my $pid = SmtpChainTest::spawn(argv => ['perl', $testpolicy, $sock, $log],
	    output => "$dir/policy-$name.out");
	SmtpChainTest::on_cleanup("testpolicy $name", sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
	wait_until(sub { -S $sock || !proc_alive($pid) }, 10);
	die "testpolicy $name did not come up\n" unless -S $sock;
	return { name => $name, pid => $pid, log => $log };
}

sub policy_log { slurp($_[0]{log}) // '' }

# The requests the server got, as hashes (conn => its connection's number).
sub requests {
	my ($srv) = @_;
	my @r;
	for (split /\n/, policy_log($srv)) {
		my ($head, @kv) = split /\t/;
		next unless $head =~ /^req (\d+)$/;
		push @r, { conn => $1, map { /^([^=]*)=(.*)\z/ ? ($1, $2) : () } @kv };
	}
	return @r;
}

our $sink = start_sink();

# A proxy with one policy filter block (options as key => value text).
sub proxy_with {
	my ($name, $port, %opt) = @_;
	my $sport = $sink->port;
	my $block = "filter {\n\tmodule = \"$module\";\n\tserver = \"inet:127.0.0.1:$port\";\n";
	$block .= "\t$_ = $opt{$_};\n" for sort keys %opt;
	$block .= "}\n";
	return start_proxy(qq{backend = "127.0.0.1:$sport";\nquarantine_dir = "$qdir";\n} .
	    qq{workers = 1;\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n$block},
	    name => $name);
}

my $seq = 0;

# A unique message; returns (tag, text).
sub message {
	my $tag = sprintf('p%d-%d', $$, ++$seq);
	return ($tag, "From: <s\@client.test>\r\nTo: <r\@example.test>\r\nSubject: $tag\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n\r\nHello.\r\n");
}

# One session: EHLO, MAIL, the RCPTs, the message if one was accepted.
sub transact {
	my ($port, %o) = @_;
	my $c = smtp_connect($port, timeout => 30 * $scale) or die "connect: $@\n";
	my %r = (greeting => $c->read_reply);
	$r{ehlo} = $c->ehlo('client.test');
	my ($tag, $data) = message();
	my $s = $c->send_mail(from => $o{from} // 'sender@client.test', to => $o{to},
	    data => $data, mail_params => $o{mail_params});
	%r = (%r, %$s, tag => $tag);
	$c->quit;
	return \%r;
}

sub delivered {
	my ($tag) = @_;
	my @m = $sink->wait_find(qr/\Q$tag\E/, 10 * $scale);
	return $m[0];
}

sub not_delivered {
	my ($tag) = @_;
	return !$sink->wait_find(qr/\Q$tag\E/, 2);
}

my $srv = start_policy('main');
my $p = proxy_with('main', $srv->{port}, timeout => 2 * $scale, try_limit => 1,
    policy_context => '"tests"');

# --- attributes, as Postfix 3.7 sends them
{
	my $r = transact($p->port, to => ['dunno-1@example.test']);
	reply_ok($r->{end}, 250, undef, 'dunno: accepted');
	ok(delivered($r->{tag}), 'dunno: delivered');
	my ($q) = grep { ($_->{recipient} // '') eq 'dunno-1@example.test' } requests($srv);
	ok($q, 'the server got the RCPT request');
	$q ||= {};
	is($q->{request}, 'smtpd_access_policy', 'request');
	is($q->{protocol_state}, 'RCPT', 'protocol_state');
	is($q->{protocol_name}, 'ESMTP', 'protocol_name');
	is($q->{client_address}, '127.0.0.1', 'client_address');
	like($q->{client_port} // '', qr/^\d+$/, 'client_port');
	ok(defined $q->{client_name} && $q->{client_name} ne '', 'client_name (a name or "unknown")');
	is($q->{helo_name}, 'client.test', 'helo_name');
	is($q->{sender}, 'sender@client.test', 'sender, without angle brackets');
	is($q->{recipient_count}, 0, 'recipient_count is 0 at RCPT, as Postfix');
	is($q->{size}, 0, 'size 0 at RCPT without SIZE= (the sink offers no SIZE)');
	like($q->{instance} // '', qr/\S/, 'instance');
	is($q->{queue_id}, $q->{instance}, 'queue_id: the message id, as instance');
	like($p->log_text, qr/msgid=\Q$q->{queue_id}\E\b/, 'queue_id: the msgid= of the summary line');
	is($q->{server_address}, '127.0.0.1', 'server_address');
	is($q->{server_port}, $p->port, 'server_port: the port the client connected to');
	is($q->{policy_context}, 'tests', 'policy_context');
	for my $k (qw(reverse_client_name sasl_method sasl_username sasl_sender ccert_subject
	    ccert_issuer encryption_protocol encryption_cipher encryption_keysize etrn_domain stress)) {
		ok(exists $q->{$k}, "attribute $k is sent");
	}
}

# --- protocol_name: SMTP after a plain HELO, as Postfix
{
	my $c = smtp_connect($p->port, timeout => 30 * $scale) or die "connect: $@\n";
	$c->read_reply;
	reply_ok($c->cmd('HELO client.test'), 250, undef, 'HELO: accepted');
	reply_ok($c->cmd('MAIL FROM:<sender@client.test>'), 250, undef, 'HELO: MAIL');
	reply_ok($c->cmd('RCPT TO:<dunno-helo@example.test>'), 250, undef, 'HELO: RCPT');
	$c->quit;
	my ($q) = grep { ($_->{recipient} // '') eq 'dunno-helo@example.test' } requests($srv);
	is($q ? $q->{protocol_name} : undef, 'SMTP', 'protocol_name after HELO: SMTP');
}

# --- each action at RCPT
my %want = (
	ok => [250], dunno => [250], dir => [250], warn => [250], filter => [250],
	reject => [554, '5.7.1', qr/<reject-\S+>: Recipient address rejected: no thanks/],
	defer => [450, '4.7.1', qr/<defer-\S+>: Recipient address rejected: try later/],
	code => [550, '5.7.23', qr/<code-\S+>: Recipient address rejected: custom text/],
	dip => [450, '4.7.1', qr/Recipient address rejected: greylisted/],
);
for my $word (sort keys %want) {
	my ($code, $dsn, $text) = @{ $want{$word} };
	my $r = transact($p->port, to => ["$word-x\@example.test", 'dunno-2@example.test']);
	reply_ok($r->{rcpt}[0], $code, $dsn, "$word: RCPT $code");
	like($r->{rcpt}[0]{text} // '', $text, "$word: Postfix's reply text") if $text;
	reply_ok($r->{rcpt}[1], 250, undef, "$word: the other recipient is accepted");
	reply_ok($r->{end}, 250, undef, "$word: the message is accepted");
	my $m = delivered($r->{tag});
	ok($m, "$word: delivered");
	is(scalar(grep { /^<?\Q$word\E-x\@/ } @{ $m ? $m->{rcpt} : [] }), $code == 250 ? 1 : 0,
	    "$word: the recipient is there only if accepted");
}
like($p->log_text, qr/warn: <warn-x\@example.test>: Recipient address watch this/, 'warn: logged');
like($p->log_text, qr/FILTER smtp:\[127\.0\.0\.1\]:1 at RCPT ignored/, 'filter: logged as ignored');
like($p->log_text, qr/DEFER_IF_REJECT at RCPT/, 'defer_if_reject: logged');
{
	my $r = transact($p->port, to => ['prepend-x@example.test']);
	my $m = delivered($r->{tag});
	like($m ? $m->{message} : '', qr/\AX-Policy: prepended\n/m, 'prepend: the header is on top');
}
{
	my $before = () = glob("$qdir/*");
	my $r = transact($p->port, to => ['hold-x@example.test']);
	reply_ok($r->{end}, 250, undef, 'hold: 250');
	ok(not_delivered($r->{tag}), 'hold: not delivered');
	my @q = glob("$qdir/*");
	is(scalar(@q), $before + 1, 'hold: quarantined');
	like(join('', map { slurp($_) // '' } @q), qr/\Q$r->{tag}\E/, 'hold: the message is in quarantine');
}
{
	my $r = transact($p->port, to => ['discard-x@example.test']);
	reply_ok($r->{end}, 250, undef, 'discard: 250');
	ok(not_delivered($r->{tag}), 'discard: dropped');
	like($p->log_text, qr/discard: <discard-x\@example.test>: Recipient address dropped/, 'discard: logged');
}
{
	my $r = transact($p->port, to => ['redirect-x@example.test', 'dunno-3@example.test']);
	my $m = delivered($r->{tag});
	is_deeply($m ? [sort map { s/^<|>$//gr } @{ $m->{rcpt} }] : [], ['redirected@example.test'],
	    'redirect: the message goes to the target only') or diag explain $m && $m->{rcpt};
}
{
	my $r = transact($p->port, to => ['bcc-x@example.test']);
	my $m = delivered($r->{tag});
	is_deeply($m ? [sort map { s/^<|>$//gr } @{ $m->{rcpt} }] : [], ['bcc-x@example.test', 'copy@example.test'],
	    'bcc: the copy is added') or diag explain $m && $m->{rcpt};
}
{
	my $r = transact($p->port, to => ['unknown-x@example.test']);
	reply_ok($r->{rcpt}[0], 451, '4.3.5', 'unknown action: default_action');
	like($p->log_text, qr/answer at RCPT: "reject_unknown_client_hostname": not an action of access\(5\); default_action/,
	    'unknown action: logged');
}

# --- the cache: the same request twice in one message is asked once
{
	my $before = () = requests($srv);
	my $r = transact($p->port, to => ['dunno-c@example.test', 'dunno-c@example.test']);
	reply_ok($r->{rcpt}[1], 250, undef, 'cache: second RCPT accepted');
	my @new = (requests($srv))[$before .. $before + 5];
	is(scalar(grep { $_ && ($_->{recipient} // '') eq 'dunno-c@example.test' } @new), 1,
	    'cache: one request for two identical RCPTs');
	like($p->log_text, qr/action=DUNNO \(cached\)/, 'cache: logged');
	my $r2 = transact($p->port, to => ['dunno-c@example.test']);
	my @after = grep { ($_->{recipient} // '') eq 'dunno-c@example.test' } requests($srv);
	is(scalar(@after), 2, 'cache: a new message asks again');
	isnt($after[0]{instance}, $after[1]{instance}, 'cache: with another instance');
}

# --- connections: one server connection, kept from session to session
{
	my $accepts = () = policy_log($srv) =~ /^accept /mg;
	transact($p->port, to => ['dunno-r1@example.test']);
	transact($p->port, to => ['dunno-r2@example.test']);
	my $after = () = policy_log($srv) =~ /^accept /mg;
	is($after, $accepts, 'reuse: no new connection for two more sessions');
	my @q = grep { ($_->{recipient} // '') =~ /^dunno-r[12]@/ } requests($srv);
	is($q[0]{conn}, $q[1]{conn}, 'reuse: both over the same connection');
}
{
	my $s2 = start_policy('limit');
	my $pl = proxy_with('limit', $s2->{port}, request_limit => 1, timeout => 2 * $scale);
	transact($pl->port, to => ['dunno-l1@example.test', 'dunno-l2@example.test']);
	my $accepts = () = policy_log($s2) =~ /^accept /mg;
	is($accepts, 2, 'request_limit = 1: a connection per request');
	$pl->stop_ok('limit proxy');
}

{
	# max_idle: an unused connection is closed (the server sees its close).
	my $s4 = start_policy('idle');
	my $pi = proxy_with('idle', $s4->{port}, max_idle => 1, timeout => 2 * $scale);
	transact($pi->port, to => ['dunno-i@example.test']);
	ok(wait_until(sub { policy_log($s4) =~ /^close 1$/m }, 30 * $scale),
	    'max_idle = 1: the idle connection is closed');
	# max_ttl: a connection older than that is not used again.
	$pi->stop_ok('idle proxy');
	my $s5 = start_policy('ttl');
	my $pt = proxy_with('ttl', $s5->{port}, max_ttl => 1, timeout => 2 * $scale);
	transact($pt->port, to => ['dunno-t1@example.test']);
	sleep(1.5);	# the connection's age is what is tested: time must pass
	transact($pt->port, to => ['dunno-t2@example.test']);
	my $accepts = () = policy_log($s5) =~ /^accept /mg;
	is($accepts, 2, 'max_ttl = 1: a new connection after it');
	$pt->stop_ok('ttl proxy');
}
{
	# A server on a unix socket.
	my $sock = "$dir/policy.sock";
	my $s6 = start_unix_policy('unix', $sock);
	my $pu = start_proxy(qq{backend = "127.0.0.1:} . $sink->port . qq{";\nworkers = 1;\n} .
	    qq{filter { module = "$module"; server = "unix:$sock"; }\n}, name => 'unix');
	my $r = transact($pu->port, to => ['reject-u@example.test', 'dunno-u@example.test']);
	reply_ok($r->{rcpt}[0], 554, '5.7.1', 'unix socket: REJECT');
	reply_ok($r->{end}, 250, undef, 'unix socket: the other recipient goes through');
	ok(delivered($r->{tag}), 'unix socket: delivered');
	$pu->stop_ok('unix proxy');
}

# --- steps: every one, with END-OF-MESSAGE's answer
{
	my $s3 = start_policy('steps');
	my $ps = proxy_with('steps', $s3->{port}, timeout => 2 * $scale,
	    steps => '[ "connect", "helo", "mail", "rcpt", "data", "end_of_data" ]');
	my $r = transact($ps->port, to => ['dunno-s@example.test', 'dunno-t@example.test']);
	reply_ok($r->{end}, 250, undef, 'steps: accepted');
	my @q = requests($s3);
	is_deeply([map { $_->{protocol_state} } @q], [qw(CONNECT EHLO MAIL RCPT RCPT DATA END-OF-MESSAGE)],
	    'steps: one request at each');
	my ($data) = grep { $_->{protocol_state} eq 'DATA' } @q;
	is($data->{recipient_count}, 2, 'steps: recipient_count at DATA');
	my ($eom) = grep { $_->{protocol_state} eq 'END-OF-MESSAGE' } @q;
	ok(($eom->{size} // 0) > 50, 'steps: size at END-OF-MESSAGE counts the message');
	is($q[0]{instance}, '', 'steps: no instance before MAIL');
	$r = transact($ps->port, from => 'reject-e@client.test', to => ['dunno-u@example.test']);
	reply_ok($r->{end}, 554, '5.7.1', 'steps: REJECT at END-OF-MESSAGE');
	like($r->{end}{text} // '', qr/<END-OF-MESSAGE>: End-of-data rejected: no thanks/, 'steps: its text');
	ok(not_delivered($r->{tag}), 'steps: not delivered');
	$r = transact($ps->port, from => 'prepend-e@client.test', to => ['dunno-v@example.test']);
	my $m = delivered($r->{tag});
	ok($m, 'steps: PREPEND at END-OF-MESSAGE: delivered');
	unlike($m ? $m->{message} : '', qr/X-Policy: prepended/,
	    'steps: PREPEND at END-OF-MESSAGE is ignored, as Postfix');
	ok($ps->wait_log(qr/(access table inet:\S+: action PREPEND must be used before smtpd_end_of_data_restrictions)/,
	    10 * $scale), 'steps: ... with Postfix\'s warning');

	# PREPEND at EHLO: once per message, however many EHLOs (a second EHLO,
	# as after STARTTLS, replaces what the first one added)
	for my $case (['prepend-h.test', 1], ['client.test', 0]) {
		my ($second, $want) = @$case;
		my $c = smtp_connect($ps->port, timeout => 30 * $scale) or die "connect: $@\n";
		$c->read_reply;
		reply_ok($c->ehlo('prepend-h.test'), 250, undef, 'EHLO PREPEND: first EHLO');
		reply_ok($c->ehlo($second), 250, undef, "EHLO PREPEND: second EHLO $second");
		my ($htag, $hdata) = message();
		my $hr = $c->send_mail(from => 'sender@client.test', to => ['dunno-h@example.test'],
		    data => $hdata);
		reply_ok($hr->{end}, 250, undef, "EHLO PREPEND then $second: accepted");
		$c->quit;
		my $hm = delivered($htag);
		my @h = ($hm ? $hm->{message} : '') =~ /^X-Policy: prepended$/mg;
		is(scalar @h, $want, "EHLO PREPEND then EHLO $second: $want header(s)");
	}

	# queue_id and instance are the host's message id, the msgid= of its log
	# (a MAIL refused keeps its number, as the log does; the module counted
	# its own MAILs and sent another id)
	my $c = smtp_connect($ps->port, timeout => 30 * $scale) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	reply_ok($c->cmd('MAIL FROM:<mailreject-q@client.test>'), 554, '5.7.1', 'queue_id: MAIL refused');
	reply_ok($c->cmd('MAIL FROM:<sender@client.test>'), 250, undef, 'queue_id: MAIL again');
	reply_ok($c->cmd('RCPT TO:<dunno-q@example.test>'), 250, undef, 'queue_id: RCPT');
	reply_ok($c->cmd('DATA'), 354, undef, 'queue_id: DATA');
	my ($qtag, $qdata) = message();
	reply_ok($c->cmd("$qdata."), 250, undef, 'queue_id: the message is accepted');
	$c->quit;
	ok(delivered($qtag), 'queue_id: delivered');
	my ($qr) = grep { ($_->{recipient} // '') eq 'dunno-q@example.test' } requests($s3);
	my $qid = $qr ? $qr->{queue_id} : '';
	ok($ps->wait_log(qr/msgid=\Q$qid\E .*from=<sender\@client\.test> .*status=sent/),
	    "queue_id: the log's msgid ($qid)") or diag(join "\n", grep { /msgid=/ } split /\n/, $ps->log_text);
	is($qr ? $qr->{instance} : '', $qid, 'queue_id: instance is the same id');
	$ps->stop_ok('steps proxy');
}

# --- recipient at DATA with one recipient accepted: never one refused after
# the module's answer (here by a later filter; the module sent it before)
{
	my $s4 = start_policy('later');
	my $rx = "$build/filters/regex/.libs/regex.so";
	my $rc = spew("$dir/recipient_checks", "/^refused-/ REJECT refused by a later filter\n");
	my $sport = $sink->port;
	my $t = 2 * $scale;
	my $block = "filter {\n\tmodule = \"$rx\";\n\trecipient_checks = \"$rc\";\n}\n";
	my $pr = start_proxy("backend = \"127.0.0.1:$sport\";\nworkers = 1;\n" .
	    "log { level = \"debug\"; }\ntimeout { shutdown = 5; }\n" .
	    "filter {\n\tmodule = \"$module\";\n\tserver = \"inet:127.0.0.1:$s4->{port}\";\n" .
	    "\tsteps = [ \"rcpt\", \"data\" ];\n\ttimeout = $t;\n}\n$block", name => 'later');
	my $r = transact($pr->port, to => ['dunno-w@example.test', 'refused-w@example.test']);
	like($r->{rcpt}[1]{code} // '', qr/^5/, 'later filter: the second recipient is refused');
	reply_ok($r->{end}, 250, undef, 'later filter: the message is accepted');
	my ($data) = grep { $_->{protocol_state} eq 'DATA' } requests($s4);
	is($data ? $data->{recipient_count} : '', 1, 'later filter: recipient_count 1 at DATA');
	ok($data && ($data->{recipient} eq '' || $data->{recipient} eq 'dunno-w@example.test'),
	    'later filter: recipient at DATA is not the refused one') or diag($data && $data->{recipient});
	$pr->stop_ok('later proxy');
}

# --- faults: each ends in default_action (here: tempfail), logged, nothing lost
my %faults = (
	slow => qr/no answer within \d+ s at RCPT/,
	close => qr/closed the connection in the middle of its answer at RCPT/,
	garbage => qr/malformed answer \(a line without '='\) at RCPT/,
	big => qr/answer over 4096 octets at RCPT/,
	extra => qr/malformed answer \(an attribute other than "action"\) at RCPT/,
);
for my $f (sort keys %faults) {
	my $r = transact($p->port, to => ["$f-x\@example.test"]);
	reply_ok($r->{rcpt}[0], 451, '4.3.5', "$f: default_action (451 4.3.5)");
	like($r->{rcpt}[0]{text} // '', qr/Recipient address rejected: Server configuration problem/,
	    "$f: Postfix's text");
	like($p->log_text, qr/$faults{$f} \(attempt 1 of 1\); default_action "451 4\.3\.5/, "$f: logged");
	ok(not_delivered($r->{tag}), "$f: nothing delivered (the client was told 451)");
	my $r2 = transact($p->port, to => ['dunno-after@example.test']);
	reply_ok($r2->{end}, 250, undef, "$f: the next session is served");
	ok(delivered($r2->{tag}), "$f: and delivered");
}

# default_action = accept: the message goes through, once.
{
	my $pa = proxy_with('accept', $srv->{port}, timeout => 2 * $scale, try_limit => 2,
	    retry_delay => 0, default_action => '"accept"');
	my $r = transact($pa->port, to => ['garbage-a@example.test']);
	reply_ok($r->{end}, 250, undef, 'default accept: accepted');
	my @m = $sink->wait_find(qr/\Q$r->{tag}\E/, 10 * $scale);
	is(scalar(@m), 1, 'default accept: delivered once');
	like($pa->log_text, qr/attempt 1 of 2\); trying again/, 'default accept: tried again');
	like($pa->log_text, qr/attempt 2 of 2\); default_action "DUNNO"/, 'default accept: then gave up');
	$pa->stop_ok('accept proxy');
}

# Down at start, up later.
{
	my $port = free_port();
	my $pd = proxy_with('down', $port, timeout => 2 * $scale, retry_delay => 0);
	my $r = transact($pd->port, to => ['dunno-d@example.test']);
	reply_ok($r->{rcpt}[0], 451, '4.3.5', 'down: default_action');
	like($pd->log_text, qr/cannot connect: connection refused at RCPT \(attempt 2 of 2\); default_action/,
	    'down: logged after two attempts');
	start_policy('late', $port);
	$r = transact($pd->port, to => ['dunno-d@example.test']);
	reply_ok($r->{end}, 250, undef, 'down: served once the server is up');
	ok(delivered($r->{tag}), 'down: delivered');
	$pd->stop_ok('down proxy');
}

# --- the example server in filters/policy/examples
{
	my $port = free_port();
	my $list = spew("$dir/blocked", "spammer\@client.test\n");
	my $pid = SmtpChainTest::spawn(argv => ['perl', "$src/filters/policy/examples/blocklist.pl",
	    "127.0.0.1:$port", $list], output => "$dir/blocklist.out");
	SmtpChainTest::on_cleanup('blocklist', sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	my $pe = proxy_with('example', $port, steps => '[ "mail" ]', timeout => 5 * $scale);
	my $r = transact($pe->port, from => 'spammer@client.test', to => ['r@example.test']);
	reply_ok($r->{mail}, 554, '5.7.1', 'example: a listed sender is refused');
	like($r->{mail}{text} // '', qr/<spammer\@client.test>: Sender address rejected: spammer\@client.test is not welcome here/,
	    'example: with its text');
	$r = transact($pe->port, from => 'friend@client.test', to => ['r@example.test']);
	reply_ok($r->{end}, 250, undef, 'example: others pass');
	$pe->stop_ok('example proxy');
}

$p->stop_ok('main proxy');
done_testing();
