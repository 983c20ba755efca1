# 93-concurrent-drops.t - 1,000 sessions at once, some clients dropping at
# random points, none of it losing mail.
#
# 1,000 connections are opened to the proxy (in front of smtp-sink) and
# then driven together from one poll loop.  Each session, chosen at random
# (fixed seed, so a failure can be replayed), either completes a message or
# hangs up: right after the greeting, after MAIL, in the middle of its
# message data, or right after sending its end of data without waiting for
# the reply.  The ledger then checks every 250 is at the sink exactly
# once, nothing dropped before its end of data is, and reports the counts.
# Every session that did not drop must have got its 250: the others kept
# working.  Bounded: the loop gives up after 300 s (scaled under valgrind).
use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR EINPROGRESS);
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use IO::Socket::IP;
use Test::More;
use Time::HiRes qw(time);
use SmtpChainTest;
use SmtpChainFaults;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $N = $ENV{SMTPCHAIN_CONCURRENT} || 1000;
my $seed = $ENV{SMTPCHAIN_SEED} || 20261124;
srand($seed);
note("$N sessions, seed $seed (SMTPCHAIN_SEED=$seed replays this run)");

my $sink = start_sink(backlog => 4096, verbose => 0);
my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:@{[ $sink->port ]}";
limits { max_connections = @{[ $N * 2 ]}; max_connections_per_client = 0; }
timeout { command = 120; data = 120; backend = 120; shutdown = 10; }
EOF
my $ledger = ledger(messages => sub { map { $_->{message} } $sink->messages });

# What each session does: complete, or drop at one of these points.
my @plans = (('complete') x 6, qw(greeting mail middata nowait));
my (@s, %by_fd);
for my $i (1 .. $N) {
	my $sock = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $proxy->port,
	    Proto => 'tcp', Timeout => 20);
	unless ($sock) {
		fail("connection $i of $N: $@");
		last;
	}
	$sock->blocking(0);
	my ($tag, $text) = tagged_message(prefix => "c$i",
	    body => join('', map { "line $_ of session $i\r\n" } 1 .. 20 + int(rand(200))));
	my $plan = $plans[int rand @plans];
	my $s = { i => $i, sock => $sock, tag => $tag, plan => $plan, in => '', out => '',
	    step => 'greeting', text => SmtpChainTest::dot_stuff($text) };
	$ledger->tried($tag);
	push @s, $s;
	$by_fd{fileno $sock} = $s;
}
is(scalar @s, $N, "$N connections open at once");

# The replies a session waits for, in order, and what it sends after each.
sub advance {
	my ($s, $code) = @_;
	my $step = $s->{step};
	my $want = $step eq 'data' ? 354 : $step eq 'greeting' ? 220 : $step eq 'quit' ? 221 : 250;
	if ($step eq 'end') {
		$s->{end} = $code;
		$ledger->saw($s->{tag}, $code == 250 ? 'accepted' : 'refused');
		$s->{out} .= "QUIT\r\n";
		$s->{step} = 'quit';
		return;
	}
	if ($code != $want) {
		$s->{failed} = "$step: $code";
		return finish($s);
	}
	if ($step eq 'greeting') {
		return finish($s) if $s->{plan} eq 'greeting';
		$s->{out} .= "EHLO client$s->{i}.test\r\n";
		$s->{step} = 'ehlo';
	} elsif ($step eq 'ehlo') {
		$s->{out} .= "MAIL FROM:<s$s->{i}\@client.test>\r\n";
		$s->{step} = 'mail';
	} elsif ($step eq 'mail') {
		return finish($s) if $s->{plan} eq 'mail';
		$s->{out} .= "RCPT TO:<r$s->{i}\@example.test>\r\n";
		$s->{step} = 'rcpt';
	} elsif ($step eq 'rcpt') {
		$s->{out} .= "DATA\r\n";
		$s->{step} = 'data';
	} elsif ($step eq 'data') {
		if ($s->{plan} eq 'middata') {
			# Everything up to half of the body: never the last line.
			my $cut = index($s->{text}, "line 10 of session");
			$s->{out} .= substr($s->{text}, 0, $cut);
			$s->{close_after_send} = 1;
			return;
		}
		$s->{out} .= $s->{text} . ".\r\n";
		if ($s->{plan} eq 'nowait') {
			$s->{close_after_send} = 1;
			$ledger->saw($s->{tag}, 'unknown');
			return;
		}
		$s->{step} = 'end';
	} elsif ($step eq 'quit') {
		finish($s);
	}
}

sub finish {
	my ($s) = @_;
	return if $s->{done};
	$s->{done} = 1;
	delete $by_fd{fileno $s->{sock}};
	close $s->{sock};
}

my $poll = IO::Poll->new;
my $deadline = time + 300 * $SmtpChainTest::TIME_SCALE;
while (%by_fd && time < $deadline) {
	$poll = IO::Poll->new;
	for my $s (values %by_fd) {
		$poll->mask($s->{sock} => POLLIN | (length $s->{out} ? POLLOUT : 0));
	}
	my $n = $poll->poll(1);
	next unless $n && $n > 0;
	for my $s (values %by_fd) {
		my $ev = $poll->events($s->{sock});
		next unless $ev;
		if ($ev & POLLOUT && length $s->{out}) {
			my $w = syswrite($s->{sock}, $s->{out});
			if (defined $w) { substr($s->{out}, 0, $w) = '' }
			elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) { $s->{failed} = "write: $!"; finish($s); next }
			if (!length $s->{out} && $s->{close_after_send}) { finish($s); next }
		}
		if ($ev & (POLLIN | POLLHUP | POLLERR)) {
			my $r = sysread($s->{sock}, my $buf, 65536);
			if (!defined $r) {
				next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
				$s->{failed} //= "read: $!";
				finish($s);
				next;
			}
			if ($r == 0) {
				$s->{failed} //= "closed at $s->{step}" unless $s->{step} eq 'quit';
				finish($s);
				next;
			}
			$s->{in} .= $buf;
			while (!$s->{done} && $s->{in} =~ s/\A((?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n)//) {
				advance($s, $2);
			}
		}
	}
}
my @open = values %by_fd;
is(scalar @open, 0, 'every session ended within the time bound') or do {
	my %at;
	$at{$_->{step}}++ for @open;
	diag('still open: ' . join(', ', map { "$_=$at{$_}" } sort keys %at));
	finish($_) for @open;
};
my @complete = grep { $_->{plan} eq 'complete' } @s;
my @ok = grep { ($_->{end} // 0) == 250 } @complete;
is(scalar @ok, scalar @complete, 'every session that did not drop got its 250 (' . scalar(@complete) . ')')
    or diag(join("\n", map { "session $_->{i}: " . ($_->{failed} // "end $_->{end}") }
	grep { ($_->{end} // 0) != 250 } @complete[0 .. ($#complete < 20 ? $#complete : 20)]));
my @early = grep { $_->{failed} && $_->{plan} ne 'complete' } @s;
is(scalar @early, 0, 'no dropping session was refused before it dropped')
    or diag(join("\n", map { "session $_->{i} ($_->{plan}): $_->{failed}" } @early[0 .. ($#early < 10 ? $#early : 10)]));

# A normal session afterwards.
my $r = try_message($proxy->port, $ledger, prefix => 'after');
reply_ok($r->{end}, 250, undef, 'a session after the storm relays normally');

my $c = $ledger->check("$N concurrent sessions with random drops", timeout => 60);
cmp_ok($c->{accepted}, '>=', scalar @complete, 'the accepted count covers every completed session');
$proxy->stop_ok;
done_testing();
