# 81-backends.t - several backends: failover, round robin, hold-down.
#
# Backends are smtp-sink instances (each with its own greeting name, so the
# client can tell which one it got) and, for what smtp-sink cannot do, a
# small SMTP server written here: it greets with a chosen reply (or not at
# all), records every line it gets, answers QUIT with 221, "NOOP slow" after
# 2 s, "NOOP hang" never, anything else with 250 at once.  A port nobody
# listens on stands for a backend that is down.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $dir = tmpdir();
my $sink1 = start_sink(name => 'one', hostname => 'one.test');
my $sink2 = start_sink(name => 'two', hostname => 'two.test');
my ($s1, $s2) = ($sink1->port, $sink2->port);
my ($down1, $down2) = (SmtpChainTest::free_port(), SmtpChainTest::free_port());

# A backend that greets with $greeting ('' = never), one connection at a time.
my $fake_src = <<'EOF';
use strict; use warnings; use IO::Socket::IP;
my ($port, $greeting, $log) = @ARGV;
my $l = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port, Listen => 16,
    ReuseAddr => 1) or die "listen: $!";
for (1 .. 1000) {
	my $c = $l->accept or next;
	$c->autoflush(1);
	print $c "$greeting\r\n" if length $greeting;
	open(my $fh, '>>', $log) or die; $fh->autoflush(1);
	print $fh "connect\n";
	while (my $line = <$c>) {
		$line =~ s/\r?\n\z//;
		print $fh "$line\n";
		if ($line =~ /^QUIT/i) { print $c "221 2.0.0 bye\r\n"; last }
		next if $line =~ /^NOOP hang/i;
		sleep 2 if $line =~ /^NOOP slow/i;
		print $c "250 ok\r\n";
	}
	print $fh "closed\n";
	close $c;
}
EOF
my $fake_script = spew("$dir/fake-backend.pl", $fake_src);

sub start_fake {
	my ($name, $greeting) = @_;
	my $port = SmtpChainTest::free_port();
	my $log = "$dir/$name.lines";
	spew($log, '');
	my $pid = SmtpChainTest::spawn(argv => [$^X, $fake_script, $port, $greeting, $log],
	    output => "$dir/$name.out");
	SmtpChainTest::on_cleanup("fake backend $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	die "fake backend $name did not start\n" unless SmtpChainTest::port_listening($port);
	return { port => $port, log => $log, pid => $pid };
}

# The greeting the client gets, after which it quits.
sub greeting_of {
	my ($port) = @_;
	my @r = smtp_session($port, ['QUIT']);
	return $r[0];
}

# 1. The first backend is down: the second is used; then held down.
# (Hold-down and round-robin turns are per worker process: one worker here.)
{
	my $p = start_proxy(<<"EOF", name => 'failover');
workers = 1;
backend = [ "127.0.0.1:$down1", "127.0.0.1:$s1" ];
timeout { shutdown = 5; }
EOF
	my $c = smtp_connect($p->port) or BAIL_OUT("connect: $@");
	my $g = $c->read_reply;
	reply_ok($g, 220, undef, 'first backend down: a greeting');
	like($g->{text} // '', qr/^one\.test\b/, 'from the second backend');
	reply_ok($c->ehlo, 250, undef, 'EHLO');
	my $msg = make_message(subject => 'failover one');
	my $r = $c->send_mail(from => 'a@client.test', to => ['b@example.test'], data => $msg);
	reply_ok($r->{end}, 250, undef, 'a message goes through');
	reply_ok($c->quit, 221, undef, 'QUIT');
	ok($sink1->wait_find(qr/^Subject: failover one$/m, 20), 'and reaches the second backend');
	like($p->wait_log(qr/(backend 127\.0\.0\.1:\Q$down1\E: connect: [^\n]*)/) // '',
	    qr/connect: connection refused; trying 127\.0\.0\.1:\Q$s1\E$/,
	    'the log says why and which one is tried next') or diag($p->log_tail);
	ok($p->wait_log(qr/(using backend 127\.0\.0\.1:\Q$s1\E)/), 'and which backend the session used');

	# Within backend_hold_down (default 30 s) the failed one is skipped.
	my $before = () = $p->log_text =~ /connection refused/g;
	for my $i (1 .. 3) {
		my $g2 = greeting_of($p->port);
		like($g2->{text} // '', qr/^one\.test\b/, "session $i after the failure: the second backend");
	}
	wait_until(sub { (() = $p->log_text =~ /using backend/g) >= 4 }, 10);
	my $after = () = $p->log_text =~ /connection refused/g;
	is($after, $before, 'and the held-down backend is not tried again');
	is($p->stop, 0, 'proxy stops');
}

# 2. The first backend greets with 421: QUIT to it, the second is used.
{
	my $busy = start_fake('busy', '421 4.3.2 busy.test Service not available, try later');
	my $p = start_proxy(<<"EOF", name => 'greet421');
backend = [ "127.0.0.1:$busy->{port}", "127.0.0.1:$s2" ];
backend_hold_down = 0;
timeout { shutdown = 5; }
EOF
	my $g = greeting_of($p->port);
	reply_ok($g, 220, undef, 'first backend greets 421: the client gets a 220');
	like($g->{text} // '', qr/^two\.test\b/, 'the second backend\'s greeting');
	wait_until(sub { (slurp($busy->{log}) // '') =~ /closed/ }, 10);
	is(slurp($busy->{log}), "connect\nQUIT\nclosed\n", 'the 421 backend got QUIT and nothing else');
	like($p->wait_log(qr/(backend 127\.0\.0\.1:\Q$busy->{port}\E: greeting [^\n]*)/) // '',
	    qr/greeting 421 4\.3\.2 busy\.test Service not available, try later; trying 127\.0\.0\.1:\Q$s2\E/,
	    'logged with the greeting');
	# backend_hold_down = 0: the next session tries the 421 one first again.
	greeting_of($p->port);
	wait_until(sub { (() = (slurp($busy->{log}) // '') =~ /^closed$/mg) >= 2 }, 10);
	my $n = () = (slurp($busy->{log}) // '') =~ /^connect$/mg;
	is($n, 2, 'backend_hold_down = 0: it is tried again by the next session');
	is($p->stop, 0, 'proxy stops');
}

# 3. Round robin alternates.
{
	my $p = start_proxy(<<"EOF", name => 'rr');
workers = 1;
backend = [ "127.0.0.1:$s1", "127.0.0.1:$s2" ];
backend_balance = "round-robin";
timeout { shutdown = 5; }
EOF
	my @names = map { ((greeting_of($p->port)->{text} // '') =~ /^(\S+)/)[0] // '?' } 1 .. 4;
	is_deeply(\@names, ['one.test', 'two.test', 'one.test', 'two.test'],
	    'round-robin: the backends take turns');
	is($p->stop, 0, 'proxy stops');
}

# 4. Round robin with one down: its turns go to the other.
{
	my $p = start_proxy(<<"EOF", name => 'rrdown');
workers = 1;
backend = [ "127.0.0.1:$s1", "127.0.0.1:$down1", "127.0.0.1:$s2" ];
backend_balance = "round-robin";
timeout { shutdown = 5; }
EOF
	my @names = map { ((greeting_of($p->port)->{text} // '') =~ /^(\S+)/)[0] // '?' } 1 .. 3;
	is_deeply(\@names, ['one.test', 'two.test', 'two.test'],
	    'round-robin with the middle one down: its turn goes to the next');
	is($p->stop, 0, 'proxy stops');
}

# 5. A backend that never greets: after timeout.connect, the next one.
{
	my $mute = start_fake('mute', '');
	my $p = start_proxy(<<"EOF", name => 'mute');
backend = [ "127.0.0.1:$mute->{port}", "127.0.0.1:$s1" ];
timeout { connect = 1; shutdown = 5; }
EOF
	my $g = greeting_of($p->port);
	like($g->{text} // '', qr/^one\.test\b/, 'a backend that never greets: the next one is used');
	ok($p->wait_log(qr/(backend 127\.0\.0\.1:\Q$mute->{port}\E: timeout waiting for the greeting; trying)/),
	    'logged as a timeout') or diag($p->log_tail);
	is($p->stop, 0, 'proxy stops');
}

# 6. All down: 421 to the client.
{
	my $p = start_proxy(<<"EOF", name => 'alldown');
backend = [ "127.0.0.1:$down1", "127.0.0.1:$down2" ];
timeout { shutdown = 5; }
EOF
	my $c = smtp_connect($p->port) or BAIL_OUT("connect: $@");
	reply_ok($c->read_reply, 421, '4.3.0', 'every backend down: 421 4.3.0');
	ok($c->wait_closed(10), 'and the connection is closed');
	ok($p->wait_log(qr/(backend 127\.0\.0\.1:\Q$down2\E: connect: [^\n]*; no backend left to try)/),
	    'the log says none was left') or diag($p->log_tail);
	is($p->stop, 0, 'proxy stops');
}

# 7. The only one left greets 554: its greeting is relayed as it is.
{
	my $refuse = start_fake('refuse', '554 5.3.2 refuse.test No service here');
	my $p = start_proxy(<<"EOF", name => 'last554');
backend = [ "127.0.0.1:$down1", "127.0.0.1:$refuse->{port}" ];
timeout { shutdown = 5; }
EOF
	my $g = greeting_of($p->port);
	is($g->{raw}, "554 5.3.2 refuse.test No service here\r\n",
	    'the last backend\'s 554 greeting reaches the client as it is');
	is($p->stop, 0, 'proxy stops');
}

# 8. After the last backend's 554 greeting is relayed, the session goes on
# with it under timeout.backend, not timeout.connect: a reply 2 s late comes
# through with connect = 1 (backend = 60); with backend = 1 (connect = 60) a
# reply that never comes ends the session as a backend timeout, logged as
# one, not as "waiting for the greeting".
{
	my $refuse = start_fake('refuse-late', '554 5.3.2 refuse.test No service here');
	my $slow = start_proxy(<<"EOF", name => 'last554-slow');
backend = [ "127.0.0.1:$down1", "127.0.0.1:$refuse->{port}" ];
timeout { connect = 1; backend = 60; shutdown = 5; }
EOF
	my $c = smtp_connect($slow->port) or BAIL_OUT("connect: $@");
	reply_ok($c->read_reply, 554, '5.3.2', 'the last backend\'s 554 greeting');
	reply_ok($c->cmd('NOOP slow'), 250, undef,
	    'a reply 2 s late comes through (timeout.backend 60 applies, not timeout.connect 1)');
	reply_ok($c->quit, 221, undef, 'QUIT');
	unlike($slow->log_text, qr/waiting for the greeting|4\.4\.2/, 'no timeout logged')
	    or diag($slow->log_tail);
	is($slow->stop, 0, 'proxy stops');

	my $hang = start_proxy(<<"EOF", name => 'last554-hang');
backend = [ "127.0.0.1:$down1", "127.0.0.1:$refuse->{port}" ];
timeout { connect = 60; backend = 1; shutdown = 5; }
EOF
	$c = smtp_connect($hang->port) or BAIL_OUT("connect: $@");
	reply_ok($c->read_reply, 554, '5.3.2', 'the last backend\'s 554 greeting');
	reply_ok($c->cmd('NOOP hang'), 421, '4.4.2', 'a reply that never comes: 421 4.4.2 after timeout.backend');
	ok($c->wait_closed(10), 'and the connection is closed');
	my $l = $hang->wait_log(qr/(backend 127\.0\.0\.1:\Q$refuse->{port}\E: timeout[^\n]*)/);
	is($l, "backend 127.0.0.1:$refuse->{port}: timeout (1 replies outstanding)",
	    'logged as a backend timeout') or diag($hang->log_tail);
	unlike($hang->log_text, qr/waiting for the greeting/, 'not as waiting for the greeting');
	is($hang->stop, 0, 'proxy stops');
}

done_testing();
