# 87-metrics.t - the master's metrics listener: /metrics in the Prometheus
# text format (parsed; counters match what was sent through two workers),
# /status with a live session, and a strict minimal HTTP (GET only, bounded
# request, 404, closed after the reply).
use strict;
use warnings;

use File::Path qw(make_path);
use IO::Select;
use IO::Socket::IP;
use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $TF = "$BUILD/t/modules/.libs/testfilter.so";
plan skip_all => "$TF is not built (make check builds it)" unless -f $TF;

my $dir = tmpdir();
make_path("$dir/quarantine");
my $sink = start_sink();
my $mport = free_port();
my $p = start_proxy(<<"EOF");
backend = "127.0.0.1:@{[ $sink->port ]}";
workers = 2;
quarantine_dir = "$dir/quarantine";
metrics { listen = "127.0.0.1:$mport"; }
filter {
    module = "$TF";
    verdict_subject = [ "NOPE=reject", "LATER=tempfail", "DROP=discard", "HOLD=quarantine" ];
}
EOF
my $port = $p->port;

# One raw HTTP exchange: (status line, headers+body as text), the
# connection read to its end (the server closes it).
sub http {
	my ($req) = @_;
	my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $mport, Timeout => 5)
	    or return ('', '');
	print $s $req;
	my $all = '';
	local $SIG{ALRM} = sub { die "http: no end of reply\n" };
	alarm(10);
	while (1) {
		my $n = sysread($s, my $buf, 65536);
		last unless $n;
		$all .= $buf;
	}
	alarm(0);
	close $s;
	my ($status) = $all =~ /\A([^\r\n]*)\r\n/;
	return ($status // '', $all);
}

# Scrape and parse the text format: { 'name{labels}' => value }, and check
# that every sample line is well formed.
sub scrape {
	my ($status, $all) = http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
	my ($head, $body) = split /\r\n\r\n/, $all, 2;
	my %m;
	my $bad = 0;
	for my $l (split /\n/, $body // '') {
		next if $l =~ /^# (?:HELP|TYPE) /;
		if ($l =~ /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/) {
			$m{$1} = $2;
		} else {
			$bad++;
		}
	}
	return ($status, $head // '', \%m, $bad);
}

my %sent;
my @subjects = (('fine' => 'accepted') x 1, ('NOPE' => 'rejected'), ('LATER' => 'tempfailed'),
    ('DROP' => 'discarded'), ('HOLD' => 'quarantined'));
my $n = 0;
for my $round (1 .. 2) {
	for (my $i = 0; $i < @subjects; $i += 2) {
		my ($word, $outcome) = @subjects[$i, $i + 1];
		my $c = smtp_connect($port);
		$c->read_reply;
		$c->ehlo;
		my $r = $c->send_mail(from => 'm@client.test', to => 'm@example.test',
		    data => make_message(subject => "metrics $word " . ++$n));
		$c->quit;
		$sent{$outcome}++;
	}
}
# The client has its 221 before the proxy has closed the session and counted
# its duration: scrape until the last session is counted (bounded).
my ($status, $head, $m, $bad);
SmtpChainTest::wait_until(sub {
	($status, $head, $m, $bad) = scrape();
	return ($m->{smtpchain_session_duration_seconds_count} // 0) >= 10;
}, 10);
is($status, 'HTTP/1.0 200 OK', '/metrics: 200');
like($head, qr{^Content-Type: text/plain; version=0\.0\.4}mi, 'in the text format 0.0.4');
is($bad, 0, 'every sample line parses');
is($m->{smtpchain_connections_total}, 10, 'connections_total counts the 10 sessions');
for my $o (qw(accepted rejected tempfailed discarded quarantined)) {
	is($m->{qq{smtpchain_messages_total{outcome="$o"}}}, $sent{$o}, "messages_total{outcome=\"$o\"} = $sent{$o}");
}
is($m->{q{smtpchain_filter_verdicts_total{filter="testfilter",verdict="reject"}}}, 2,
    'filter_verdicts_total for testfilter: 2 rejects');
is($m->{q{smtpchain_filter_verdicts_total{filter="testfilter",verdict="quarantine"}}}, 2, 'and 2 quarantines');
ok($m->{q{smtpchain_backend_replies_total{class="2xx"}}} >= 10, 'backend 2xx replies counted');
ok($m->{smtpchain_received_bytes_total} > 1000, 'bytes received from clients');
ok($m->{smtpchain_sent_bytes_total} > 500, 'bytes sent to clients');
is($m->{q{smtpchain_session_duration_seconds_bucket{le="+Inf"}}}, 10, 'session duration: 10 observations');
is($m->{smtpchain_session_duration_seconds_count}, 10, 'and its _count');
is($m->{q{smtpchain_message_relay_seconds_bucket{le="+Inf"}}}, 10, 'message relay time: 10 messages');
is($m->{smtpchain_workers}, 2, 'workers = 2');
is($m->{smtpchain_worker_restarts_total}, 0, 'no restarts');

# A live session on /status, and in connections_current.
my $c = smtp_connect($port);
$c->read_reply;
$c->ehlo;
reply_ok($c->cmd('MAIL FROM:<live@client.test>'), 250, undef, 'a session left open');
my $lport = $c->local_port;
my ($st, $all) = http("GET /status HTTP/1.0\r\n\r\n");
is($st, 'HTTP/1.0 200 OK', '/status: 200');
my @w = $p->worker_pids;
like($all, qr/^[0-9A-F]+\s+(?:@{[ join('|', @w) ]})\s+\[127\.0\.0\.1\]:$lport\s+COMMAND\s+\d+\s+\d+\s+\d+$/m,
    '/status lists it: id, worker, client, state, age, bytes') or diag($all);
(undef, undef, $m) = scrape();
is($m->{smtpchain_connections_current}, 1, 'connections_current = 1');

# A worker killed: restarts counted, its live session cleared.
my ($wpid) = $p->wait_log(qr/smtpchain\[(\d+)\]: info: [0-9A-F]+: connect from \[127\.0\.0\.1\]:$lport\n/);
kill 'KILL', $wpid;
ok($c->wait_closed(10), 'its worker killed: the session drops');
ok(SmtpChainTest::wait_until(sub { (undef, undef, $m) = scrape(); ($m->{smtpchain_worker_restarts_total} // 0) == 1 }, 10),
    'worker_restarts_total = 1');
is($m->{smtpchain_connections_current}, 0, 'connections_current back to 0');
($st, $all) = http("GET /status HTTP/1.0\r\n\r\n");
unlike($all, qr/:$lport\s/, 'and /status no longer lists it');
ok(SmtpChainTest::wait_until(sub { (undef, undef, $m) = scrape(); ($m->{smtpchain_workers} // 0) == 2 }, 10),
    'workers back to 2');
is($m->{smtpchain_connections_total}, 11, 'counters survive the worker (connections_total = 11)');

# Strict HTTP.
($st) = http("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
is($st, 'HTTP/1.0 405 Method Not Allowed', 'POST: 405');
($st) = http("GET /nothing HTTP/1.1\r\n\r\n");
is($st, 'HTTP/1.0 404 Not Found', 'an unknown path: 404');
($st) = http("HELLO\r\n\r\n");
is($st, 'HTTP/1.0 400 Bad Request', 'garbage: 400');
($st) = http("GET /metrics HTTP/1.1\r\nX-Long: " . ('a' x 8000) . "\r\n\r\n");
is($st, 'HTTP/1.0 431 Request Header Fields Too Large', 'a request head over 4 KB: 431');

# Idle connections do not lock a scrape out.  64 opened and left silent
# (the old limit in all: the 65th, the scrape, was closed at once, and the
# idle ones held their places for 10 s): from one address, all but
# HTTP_MAX_PER_CLIENT are closed at once; from 64 addresses, a new
# connection closes the oldest idle one.  Either way the scrape that comes
# after them is answered, and every idle one is closed by the request
# deadline.  The listener accepts in order: the scrape comes last.
sub idle_connections {
	my (@from) = @_;
	my @idle;
	for my $a (@from) {
		my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $mport, LocalHost => $a,
		    Timeout => 5) or BAIL_OUT("cannot connect from $a to the metrics listener: $@");
		push @idle, $s;
	}
	return @idle;
}
sub all_closed {
	my (@socks) = @_;
	my $sel = IO::Select->new(@socks);
	my %open = map { fileno($_) => $_ } @socks;
	SmtpChainTest::wait_until(sub {
		for my $s ($sel->can_read(0)) {
			my $n = sysread($s, my $buf, 4096);
			next if $n;
			$sel->remove($s);
			delete $open{ fileno($s) };
		}
		return !%open;
	}, 60);
	close $_ for @socks;
	return !%open;
}
for my $case (['one address', map { '127.0.0.2' } 1 .. 64], ['64 addresses', map { "127.0.1.$_" } 1 .. 64]) {
	my ($what, @from) = @$case;
	my @idle = idle_connections(@from);
	my ($status, undef, $mm) = scrape();
	is($status, 'HTTP/1.0 200 OK', "64 idle connections from $what: a scrape is answered");
	ok(defined $mm->{smtpchain_connections_total}, "$what: with the metrics");
	($status) = http("GET /status HTTP/1.1\r\n\r\n");
	is($status, 'HTTP/1.0 200 OK', "$what: and /status");
	ok(all_closed(@idle), "$what: every idle connection is closed (the request deadline)");
}

$p->stop_ok;
done_testing;
