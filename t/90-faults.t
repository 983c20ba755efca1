# 90-faults.t - the fault matrix: no message is ever lost.
#
# A scripted backend (SmtpChainFaults::start_backend) fails on purpose at
# every step: it answers 4xx or 5xx (greeting, EHLO, MAIL, RCPT, DATA, end
# of data), hangs up without a reply, stalls past timeout.backend, or dies
# in the middle of the message data.  Then a milter that hangs or dies,
# clients that drop in the middle of DATA or right after their end of data,
# and a worker process SIGKILLed with sessions at every stage.
# For each case the client's view is checked (a clear 4xx/5xx or a closed
# connection, never a 250 the backend did not give), and at the end one
# ledger of every message tried is held against what the backends have:
# every 250 delivered exactly once, nothing refused delivered, lost == 0.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;
use SmtpChainFaults;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $H = 'proxy.test';
my @backends;
my $ledger = ledger(messages => sub { map { $_->message_texts } @backends });

# A backend scripted by on, and a proxy in front of it.
sub rig {
	my ($name, $on, $extra, $backend_timeout) = @_;
	my $b = start_backend(name => "be-$name", on => $on);
	push @backends, $b;
	my $p = start_proxy(qq{backend = "127.0.0.1:@{[ $b->port ]}";\n} .
	    "timeout { backend = @{[ $backend_timeout // 3 ]}; connect = 3; shutdown = 5; }\n" .
	    ($extra // ''), name => $name);
	return ($b, $p);
}

# A message through a clean path after a fault: the proxy is still fine.
sub still_relays {
	my ($p, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $r = try_message($p->port, $ledger, prefix => 'after');
	reply_ok($r->{end}, 250, undef, "$what: the next session relays normally");
}

# --- the backend refuses at each step, 4xx and 5xx
my @stages = (
	# stage, 4xx reply, 5xx reply, what the client must see
	['greeting', '421 4.3.2 backend busy', '554 5.3.0 no service'],
	['mail', '451 4.3.0 try later', '550 5.7.1 sender refused'],
	['rcpt', '450 4.2.0 mailbox busy', '550 5.1.1 no such user'],
	['data', '451 4.3.0 not now', '554 5.5.0 no data'],
	['dot', '451 4.3.0 queue trouble', '554 5.7.1 content refused'],
);
for my $s (@stages) {
	my ($stage, @replies) = @$s;
	for my $reply (@replies) {
		my $class = substr($reply, 0, 1);
		my $tag_fail = "fail-$stage-${class}xx";
		# Only the message marked for failure fails, so the same backend
		# then shows that the proxy relays the next one normally.
		my ($b, $p) = rig("$stage-${class}xx", sub {
			my ($st, $line, $state) = @_;
			return undef unless $st eq $stage;
			return $state->{n} == 1 ? $reply : undef;
		});
		my $r = try_message($p->port, $ledger, prefix => $tag_fail);
		my $last = $r->{last};
		if ($stage eq 'greeting') {
			ok($last->{code} && $last->{code} =~ /^$class/ || !$r->{ehlo}{code} || $r->{ehlo}{code} >= 400,
			    "backend $reply at $stage: the client is refused")
			    or diag(SmtpChainTest::Client::describe($last));
			ok(!$r->{end}, "backend $reply at $stage: no transaction");
		} else {
			ok($last->{code} && substr($last->{code}, 0, 1) eq $class,
			    "backend '$reply' at $stage: the client gets a ${class}xx")
			    or diag(SmtpChainTest::Client::describe($last));
			isnt($r->{end} && $r->{end}{code}, 250, "backend '$reply' at $stage: never a 250 for the message");
		}
		still_relays($p, "after '$reply' at $stage");
		$p->stop_ok("$stage ${class}xx proxy exits 0");
	}
}

# --- EHLO refused (5xx, then 4xx): the client is told, HELO then works
for my $reply ('502 5.5.2 no ESMTP here', '451 4.3.0 not now') {
	my $class = substr($reply, 0, 1);
	my ($b, $p) = rig("ehlo-${class}xx", sub { $_[0] eq 'ehlo' ? $reply : undef });
	my $r = try_message($p->port, $ledger, prefix => "ehlo-${class}xx");
	ok(!$r->{ehlo}{code} || $r->{ehlo}{code} != 250 || $r->{helo}, "backend '$reply' to EHLO: relayed or handled");
	reply_ok($r->{end}, 250, undef, "backend '$reply' to EHLO: the message goes through with HELO");
	$p->stop_ok("ehlo-${class}xx proxy exits 0");
}

# --- the backend hangs up without a reply at each step
for my $stage (qw(greeting ehlo mail rcpt data dot)) {
	my ($b, $p) = rig("close-$stage", sub {
		my ($st, $line, $state) = @_;
		return $st eq $stage && $state->{n} == 1 ? 'close' : undef;
	});
	my $r = try_message($p->port, $ledger, prefix => "close-$stage");
	my $last = $r->{last};
	ok($last->{eof} || ($last->{code} && $last->{code} =~ /^4/),
	    "backend hangs up at $stage: 4xx or a closed connection")
	    or diag(SmtpChainTest::Client::describe($last));
	isnt($r->{end} && $r->{end}{code}, 250, "backend hangs up at $stage: no 250");
	still_relays($p, "backend hung up at $stage");
	$p->stop_ok("close-$stage proxy exits 0");
}

# --- the backend stalls past timeout.backend (3 s) at each step
for my $stage (qw(greeting mail rcpt data dot)) {
	my ($b, $p) = rig("stall-$stage", sub {
		my ($st, $line, $state) = @_;
		return $st eq $stage && $state->{n} == 1 ? 'stall' : undef;
	});
	my $r = try_message($p->port, $ledger, prefix => "stall-$stage", timeout => 60);
	my $last = $r->{last};
	ok($last->{code} && $last->{code} =~ /^4/, "backend stalls at $stage: a 4xx")
	    or diag(SmtpChainTest::Client::describe($last));
	like($last->{raw} // '', qr/^421 4\.4\.2 .*timeout|^4\d\d /, "backend stalls at $stage: says so");
	still_relays($p, "backend stalled at $stage");
	$p->stop_ok("stall-$stage proxy exits 0");
}

# --- the backend dies in the middle of the message data
for my $where (['early', qr/^\.A line/], ['late', qr/^End-Of-Message /]) {
	my ($when, $re) = @$where;
	my ($b, $p) = rig("die-$when", sub {
		my ($st, $line, $state) = @_;
		return $st eq 'body' && $state->{n} == 1 && $line =~ $re ? 'exit' : undef;
	});
	my $big = join('', map { sprintf("line %06d of a body long enough to be streamed in pieces\r\n", $_) } 1 .. 3000);
	my $r = try_message($p->port, $ledger, prefix => "die-$when",
	    body => $when eq 'early' ? ".A line first\r\n$big" : $big);
	my $end = $r->{end};
	ok(!$end || !$end->{code} || $end->{code} =~ /^4/, "backend killed mid-DATA ($when): 4xx or no reply")
	    or diag(SmtpChainTest::Client::describe($end));
	isnt($end && $end->{code}, 250, "backend killed mid-DATA ($when): never a 250");
	still_relays($p, "backend killed mid-DATA ($when)");
	$p->stop_ok("die-$when proxy exits 0");
}

# --- the client goes away in the middle of DATA, or right after its end of data
{
	my ($b, $p) = rig('client-drop', undef);
	my $body = join('', map { "body line $_\r\n" } 1 .. 2000);
	for my $i (1 .. 5) {
		try_message($p->port, $ledger, prefix => "drop-$i", body => $body,
		    drop_after => qr/^body line \Q${\ ($i * 300)}\E\r/m);
	}
	for my $i (1 .. 5) {
		try_message($p->port, $ledger, prefix => "nowait-$i", no_wait => 1);
	}
	still_relays($p, 'clients dropped mid-DATA');
	$p->stop_ok('client-drop proxy exits 0');
}

# --- a milter that hangs or dies
SKIP: {
	my $build = $ENV{SMTPCHAIN_BUILDDIR} // '';
	my $module = "$build/filters/milter/.libs/milter.so";
	my $testmilter = "$build/t/milter/testmilter";
	skip 'the milter module or t/milter/testmilter is not built', 1
	    unless -f $module && -x $testmilter;
	my $dir = tmpdir();
	for my $mode ('hang:body', 'exit:body', 'hang:rcpt', 'exit:eom', 'hang:eom') {
		(my $name = $mode) =~ s/:/-/;
		my $mport = free_port();
		my $mpid = SmtpChainTest::spawn(argv => [$testmilter, '-p', "inet:$mport\@127.0.0.1",
		    '-n', $name, '-f', $mode], output => "$dir/milter-$name.log");
		SmtpChainTest::on_cleanup("testmilter $name", sub { SmtpChainTest::stop_pid($mpid, 'KILL', 5) });
		wait_until(sub { SmtpChainTest::port_listening($mport) || !proc_alive($mpid) }, 10);
		my ($b, $p) = rig("milter-$name", undef, <<"EOF");
filter {
	module = "$module";
	socket = "inet:127.0.0.1:$mport";
	timeout_command = 2;
	timeout_content = 2;
	timeout_eom = 2;
}
EOF
		my $r = try_message($p->port, $ledger, prefix => "milter-$name", timeout => 60);
		my $last = $r->{last};
		ok($last->{code} && ($last->{code} =~ /^4/ || $last->{code} == 250),
		    "milter $mode: a 4xx, or accepted by the default action")
		    or diag(SmtpChainTest::Client::describe($last));
		$p->stop_ok("milter $mode proxy exits 0");
		SmtpChainTest::stop_pid($mpid, 'KILL', 5);
	}
}

# --- a worker SIGKILLed with sessions at every stage
#
# Two workers; sessions in the middle of DATA, waiting for the reply to
# their end of data (the backend takes 3 s over those), idle after EHLO,
# and idle after a delivered message.  The worker of the first is killed:
# its sessions see the connection drop, the other worker's sessions finish
# their messages, the master starts a new worker, and the ledger holds:
# nothing the client got 250 for is lost, nothing dropped mid-DATA is
# delivered, a message whose end of data was sent is there at most once.
{
	my ($b, $p) = rig('worker-kill', sub {
		my ($st, $line, $state) = @_;
		$state->{slow} = 1 if $st eq 'body' && $line =~ /^Subject: .*slowdot/;
		sleep 3 if $st eq 'dot' && $state->{slow};
		return undef;
	}, "workers = 2;\n", 60);	# the slow replies are slow, not past timeout.backend
	my $port = $p->port;
	SmtpChainTest::wait_until(sub { my @w = $p->worker_pids; @w == 2 }, 15);
	my $worker_of = sub {
		my ($c) = @_;
		my $lport = $c->local_port;
		return $p->wait_log(qr/smtpchain\[(\d+)\]: info: [0-9A-F]+: connect from \[127\.0\.0\.1\]:$lport\n/);
	};
	my @s;
	for my $i (1 .. 8) {
		my $kind = (qw(middata slowdot idle done))[$i % 4];
		my $c = smtp_connect($port, timeout => 30) or die;
		$c->read_reply;
		$c->ehlo('client.test');
		my %x = (c => $c, kind => $kind, worker => $worker_of->($c));
		if ($kind eq 'done') {
			my ($tag, $text) = SmtpChainFaults::tagged_message(prefix => "wk-done$i");
			$ledger->tried($tag);
			my $r = $c->send_mail(from => 's@client.test', to => 'r@example.test', data => $text);
			$ledger->saw_result($tag, $r);
		} elsif ($kind ne 'idle') {
			my ($tag, $text) = SmtpChainFaults::tagged_message(prefix => "wk-$kind$i",
			    headers => $kind eq 'slowdot' ? '' : '');
			$text =~ s/^Subject: fault /Subject: slowdot fault /m if $kind eq 'slowdot';
			$ledger->tried($tag);
			my $r = $c->begin_data(from => 's@client.test', to => 'r@example.test');
			my $stuffed = dot_stuff($text);
			if ($kind eq 'middata') {
				$c->send(substr($stuffed, 0, index($stuffed, 'End-Of-Message')));
			} else {
				$c->send($stuffed . ".\r\n");
			}
			@x{qw(tag stuffed)} = ($tag, $stuffed);
		}
		push @s, \%x;
	}
	sleep 1;	# the slow end-of-data replies are on their way at the backend
	my $victim = $s[0]{worker};
	my $others = grep { $_->{worker} && $_->{worker} != $victim } @s;
	ok($victim && kill('KILL', $victim), "SIGKILL to worker $victim (" . scalar(grep { $_->{worker} == $victim } @s)
	    . " of the 8 sessions on it)");
	for my $x (@s) {
		my $c = $x->{c};
		my $on_victim = $x->{worker} == $victim;
		if ($x->{kind} eq 'middata') {
			if ($on_victim) {
				ok($c->wait_closed(10), 'worker killed: its session in DATA sees the drop');
			} else {
				$c->send($x->{stuffed} =~ s/\A.*?(?=End-Of-Message)//sr . ".\r\n");
				my $r = { end => $c->read_reply };
				$ledger->saw_result($x->{tag}, $r);
				reply_ok($r->{end}, 250, undef, 'a session in DATA on the other worker completes');
			}
		} elsif ($x->{kind} eq 'slowdot') {
			my $r = { end => $c->read_reply(20) };
			$ledger->saw_result($x->{tag}, $r);
			if ($on_victim) {
				ok(!$r->{end}{code} || $r->{end}{code} != 250, 'worker killed: a session waiting for its end-of-data reply gets none');
			} else {
				reply_ok($r->{end}, 250, undef, 'a session waiting for its end-of-data reply on the other worker gets 250');
			}
		} else {
			my $r = $c->cmd('NOOP');
			if ($on_victim) { ok(!$r->{code}, "worker killed: its $x->{kind} session is gone") }
			else { reply_ok($r, 250, undef, "the $x->{kind} session on the other worker goes on") }
		}
		$c->close;
	}
	ok(SmtpChainTest::wait_until(sub { my @w = $p->worker_pids; @w == 2 && !grep { $_ == $victim } @w }, 15),
	    'the master starts a new worker');
	still_relays($p, 'a worker SIGKILLed');
	$p->stop_ok('worker-kill proxy exits 0');
}

# --- a multi-line reply whose lines carry different codes: the last line's
# code counts, as for Postfix's SMTP client (smtp_chat.c), every line goes to
# the client with it, and a warning is logged.  Never the proxy's 421 "lost
# connection": after an end of data the backend may have queued the message,
# and the client's retry would deliver it twice.
for my $case (['dot', "250-2.0.0 first line\r\n451 4.3.0 last line", 451],
    ['dot', "451-4.3.0 first line\r\n452-4.3.1 second line\r\n250 2.0.0 Ok: queued", 250],
    ['rcpt', "550-5.1.1 first line\r\n250 2.1.5 Ok", 250]) {
	my ($stage, $reply, $code) = @$case;
	my ($b, $p) = rig("mixed-$stage-$code", sub { $_[0] eq $stage ? $reply : undef });
	my $c = smtp_connect($p->port) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('mixed.test');
	my $r = $c->send_mail(from => 'mixed@client.test', to => 'r@example.test',
	    data => make_message(subject => "mixed codes at $stage"));
	my $got = $stage eq 'dot' ? $r->{end} : $r->{rcpt}[0];
	(my $want = "$reply\r\n") =~ s/^\d{3}/$code/mg;
	is($got && $got->{raw}, $want, "mixed codes at $stage, last $code: relayed with $code on every line")
	    or diag(SmtpChainTest::Client::describe($got));
	reply_ok($c->cmd('NOOP'), 250, undef, "mixed codes at $stage: the session goes on");
	ok($p->wait_log(qr/reply with different codes on its lines: taking the last line's $code/),
	    "mixed codes at $stage: a warning is logged");
	unlike($p->log_text, qr/lost connection|malformed/, "mixed codes at $stage: no lost connection");
	reply_ok($c->quit, 221, undef, "mixed codes at $stage: QUIT");
	$p->stop_ok("mixed codes at $stage: the proxy exits 0");
}

$ledger->check('fault matrix', min_accepted => 20);
done_testing();
