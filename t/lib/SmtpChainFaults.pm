package SmtpChainFaults;

# SmtpChainFaults - what the fault tests (t/9x-*.t) share: a scripted SMTP
# backend that fails on purpose, and a ledger that checks the promise "no
# mail is lost".
#
#   start_backend(%opt)   a small SMTP server in Perl on loopback (one forked
#                         process per connection) whose every step can be
#                         made to reply otherwise, stall, hang up or die
#   ledger(%opt)          a SmtpChainFaults::Ledger: the test records what
#                         each client was told; check() then compares with
#                         what the backend has and reports
#                         tried/accepted/refused/delivered/lost
#
# The invariant (check): every message the client saw a 250 for is at the
# backend exactly once; none the client saw refused (a 4xx/5xx, or the
# connection lost before its end of data was sent) is there at all; one
# whose end of data was sent but whose reply never came ("unknown") is
# there at most once.  lost (accepted but not delivered) must be 0.
#
# Messages are told apart by a tag in their Subject and Message-ID and a
# last body line "End-Of-Message TAG": a message counts as delivered only
# when its copy at the backend is whole (that line included).

use strict;
use warnings;

use Exporter qw(import);
use File::Path qw(make_path);
use IO::Socket::IP;
use POSIX qw(_exit WNOHANG);
use Test::More;
use Time::HiRes qw(time sleep);
use SmtpChainTest;

our @EXPORT = qw(start_backend ledger tagged_message try_message);

# ---------------------------------------------------------------------------
# The scripted backend

# start_backend(%opt): listen on a free loopback port; each connection is
# served by its own forked process.  Options:
#   name     files under tmpdir()/NAME/ (default "backend")
#   on       code ref called as on->(STAGE, LINE, STATE) at each step, STAGE
#            one of greeting, ehlo, helo, mail, rcpt, data, body (each line
#            of message data, dot-stuffing removed), dot (end of data), rset,
#            quit, other; it returns undef for the normal reply, or one of:
#              "NNN text"   this reply instead (the transaction ends with a
#                           4xx/5xx at data or dot; at greeting the
#                           connection is closed after it)
#              "stall"      read nothing, answer nothing, for an hour
#              "close"      close the connection without a reply
#              "exit"       the process serving it dies at once (SIGKILL)
#            STATE is a hash per connection ({n} = its number, from 1).
# Completed messages (end of data answered 250) are written whole, exactly
# as received (CRLF, dot-stuffing removed), one file each, before the 250.
# Returns a SmtpChainFaults::Backend.
sub start_backend {
	my (%o) = @_;
	my $name = $o{name} || 'backend';
	my $dir = SmtpChainTest::tmpdir() . "/$name";
	make_path("$dir/msg");
	my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
	    Proto => 'tcp', Listen => 1024, ReuseAddr => 1)
	    or die "start_backend: cannot listen: $@\n";
	my $port = $srv->sockport;
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		setpgrp(0, 0);
		$SIG{$_} = 'DEFAULT' for qw(ALRM TERM INT);
		$SIG{CHLD} = 'IGNORE';		# connection processes reap themselves
		$SIG{PIPE} = 'IGNORE';
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', "$dir/backend.log");
		open(STDERR, '>&', \*STDOUT);
		my $n = 0;
		while (1) {
			my $c = $srv->accept or next;
			$n++;
			my $kid = fork();
			if (defined $kid && $kid == 0) {
				close $srv;
				serve($c, $dir, $o{on}, $n);
				_exit(0);
			}
			close $c;
		}
	}
	close $srv;
	my $b = bless { pid => $pid, port => $port, dir => $dir, name => $name },
	    'SmtpChainFaults::Backend';
	SmtpChainTest::on_cleanup("backend $pid", sub { $b->stop });
	return $b;
}

# One connection: the SMTP server side, step by step.
sub serve {
	my ($c, $dir, $on, $n) = @_;
	binmode $c;
	$c->autoflush(1);
	my %st = (n => $n, rcpts => 0);
	my $act = sub {
		my ($stage, $line) = @_;
		my $a = $on ? $on->($stage, $line, \%st) : undef;
		return undef unless defined $a;
		if ($a eq 'stall') { sleep 3600; _exit(0) }
		if ($a eq 'close') { close $c; _exit(0) }
		if ($a eq 'exit') { kill('KILL', $$); _exit(1) }
		return $a;
	};
	my $say = sub { print $c "$_[0]\r\n" };
	my $g = $act->('greeting', '');
	if (defined $g) { $say->($g); close $c; _exit(0) }
	$say->('220 backend.test ESMTP scripted');
	while (defined(my $line = <$c>)) {
		(my $cmd = $line) =~ s/\r?\n\z//;
		my $verb = $cmd =~ /^(\w+)/ ? lc $1 : '';
		my $stage = { ehlo => 'ehlo', helo => 'helo', mail => 'mail', rcpt => 'rcpt',
		    data => 'data', rset => 'rset', quit => 'quit', noop => 'other' }->{$verb} // 'other';
		my $r = $act->($stage, $cmd);
		if ($stage eq 'ehlo') {
			$say->($r // "250-backend.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 200000000");
		} elsif ($stage eq 'helo') {
			$say->($r // '250 backend.test');
		} elsif ($stage eq 'mail') {
			%st = (n => $n, rcpts => 0, mail => $cmd);
			$say->($r // '250 2.1.0 Ok');
		} elsif ($stage eq 'rcpt') {
			$st{rcpts}++ unless defined $r;
			$say->($r // '250 2.1.5 Ok');
		} elsif ($stage eq 'data') {
			if (defined $r) { $say->($r); next }
			unless ($st{mail} && $st{rcpts}) { $say->('503 5.5.1 Error: need RCPT command'); next }
			$say->('354 End data with <CR><LF>.<CR><LF>');
			my $msg = '';
			my $done = 0;
			while (defined(my $l = <$c>)) {
				if ($l eq ".\r\n") { $done = 1; last }
				$l =~ s/^\.//;
				$act->('body', $l);
				$msg .= $l;
			}
			last unless $done;
			my $d = $act->('dot', '');
			if (defined $d) { $say->($d) }
			else {
				my $f = sprintf('%s/msg/%d.%d.%d', $dir, $$, $n, ++$st{msgs});
				SmtpChainTest::spew("$f.tmp", $msg);
				rename("$f.tmp", $f);
				$say->('250 2.0.0 Ok: queued');
			}
			delete $st{mail};
		} elsif ($stage eq 'rset') {
			delete $st{mail};
			$say->($r // '250 2.0.0 Ok');
		} elsif ($stage eq 'quit') {
			$say->($r // '221 2.0.0 Bye');
			last;
		} else {
			$say->($r // ($verb eq 'noop' ? '250 2.0.0 Ok' : '502 5.5.2 Error: command not recognized'));
		}
	}
	close $c;
}

# ---------------------------------------------------------------------------
# Messages

my $SEQ = 0;

# tagged_message(%opt): (TAG, TEXT) - a message (CRLF lines, not yet
# dot-stuffed) with a unique tag in Subject and Message-ID and the last line
# "End-Of-Message TAG".  Options: prefix (of the tag), body (before the last
# line), headers (extra header lines, CRLF-terminated).
sub tagged_message {
	my (%o) = @_;
	my $tag = sprintf('%s-%d-%d', $o{prefix} || 'm', $$, ++$SEQ);
	my $body = $o{body} // "Hello.\r\n.A line starting with a dot.\r\n";
	my $text = "From: <sender\@client.test>\r\nTo: <rcpt\@example.test>\r\n" .
	    "Subject: fault $tag\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n" . ($o{headers} // '') . "\r\n" .
	    $body . "End-Of-Message $tag\r\n";
	return ($tag, $text);
}

# try_message(PORT, LEDGER, %opt): one session through the proxy: greeting,
# EHLO (HELO if EHLO is refused), MAIL, RCPT, DATA, the message, end of
# data, QUIT; stops at the first refusal or when the connection goes.  The
# outcome goes into the ledger.  Options: prefix, body (tagged_message),
# drop_after (a regex: the client hangs up once it has sent the first
# message line matching it, before the end of data), no_wait (send the end
# of data and hang up without reading the reply: "unknown"), timeout.
# Returns { tag, greeting, ehlo, mail, rcpt, data, end, last } where last is
# the last reply read (the refusal, if any).
sub try_message {
	my ($port, $ledger, %o) = @_;
	my ($tag, $text) = tagged_message(%o);
	$ledger->tried($tag);
	my %r = (tag => $tag);
	my $c = SmtpChainTest::smtp_connect($port, timeout => $o{timeout} || 30)
	    or return { %r, last => { eof => 1 } };
	my $step = sub {
		my ($k, $line) = @_;
		$r{$k} = $r{last} = defined $line ? $c->cmd($line) : $c->read_reply;
		return $r{$k}{code} && $r{$k}{code} =~ /^[23]/;
	};
	my $ok = $step->('greeting') && ($step->('ehlo', 'EHLO client.test') || $step->('helo', 'HELO client.test'))
	    && $step->('mail', 'MAIL FROM:<sender@client.test>') && $step->('rcpt', 'RCPT TO:<rcpt@example.test>')
	    && $step->('data', 'DATA');
	unless ($ok && $r{data}{code} == 354) {
		$c->close;
		return \%r;
	}
	my $stuffed = SmtpChainTest::dot_stuff($text);
	if ($o{drop_after}) {
		my $re = $o{drop_after};
		my $cut = $stuffed =~ /(?:$re)[^\n]*\n/ ? $+[0] : length $stuffed;
		$c->send(substr($stuffed, 0, $cut));
		Time::HiRes::sleep($o{drop_pause} // 0.2);
		$c->close;
		return \%r;
	}
	$c->send($stuffed . ".\r\n");
	if ($o{no_wait}) {
		$c->close;
		$ledger->saw($tag, 'unknown');
		return \%r;
	}
	$step->('end');
	$ledger->saw_result($tag, \%r);
	$c->cmd('QUIT') unless $c->{eof};
	$c->close;
	return \%r;
}

# ---------------------------------------------------------------------------
# The ledger

# ledger(%opt): messages(): code returning the texts the backend has (e.g.
# $backend->message_texts or $sink->message_texts below).
sub ledger {
	my (%o) = @_;
	return bless { texts => $o{messages}, order => [], state => {} },
	    'SmtpChainFaults::Ledger';
}

# ===========================================================================
package SmtpChainFaults::Backend;

use POSIX qw(WNOHANG);

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }

# Texts of the messages it completed, one per file (CRLF line ends).
sub message_texts {
	my ($self) = @_;
	opendir(my $d, "$self->{dir}/msg") or return ();
	my @f = sort grep { !/^\./ && !/\.tmp\z/ } readdir $d;
	closedir $d;
	return map { SmtpChainTest::slurp("$self->{dir}/msg/$_") // '' } @f;
}

# Stop the server and every connection process (its process group).
sub stop {
	my ($self) = @_;
	return if $self->{stopped}++;
	kill('KILL', -$self->{pid});
	waitpid($self->{pid}, 0);
}

# ===========================================================================
package SmtpChainFaults::Ledger;

use Test::More;

# Record that a message was tried; returns the tag.
sub tried {
	my ($self, $tag) = @_;
	push @{ $self->{order} }, $tag unless exists $self->{state}{$tag};
	$self->{state}{$tag} = 'refused';
	return $tag;
}

# What the client saw at the end: accepted (a 250 to its end of data),
# refused (a 4xx/5xx at any step, or the connection lost before the end of
# data was sent) or unknown (the end of data was sent, no reply came).
sub saw {
	my ($self, $tag, $what) = @_;
	die "ledger: bad outcome $what\n" unless $what =~ /^(?:accepted|refused|unknown)\z/;
	$self->tried($tag) unless exists $self->{state}{$tag};
	$self->{state}{$tag} = $what;
}

# From a send_mail() result hash: 250 at the end is accepted; a missing
# end reply after the data went out is unknown; anything else refused.
sub saw_result {
	my ($self, $tag, $r, $data_sent) = @_;
	my $end = $r && $r->{end};
	if ($end && $end->{code} && $end->{code} == 250) { $self->saw($tag, 'accepted') }
	elsif ($end && !$end->{code} && ($data_sent // 1)) { $self->saw($tag, 'unknown') }
	else { $self->saw($tag, 'refused') }
}

# How often each tag's whole message is at the backend.
sub delivered_counts {
	my ($self) = @_;
	my %n;
	for my $t ($self->{texts}->()) {
		while ($t =~ /^End-Of-Message (\S+)\r?$/mg) { $n{$1}++ }
	}
	return \%n;
}

# The counts, as a hash: tried, accepted, refused, unknown, delivered
# (of the tried ones), lost (accepted, not delivered), duplicated (more
# than once), leaked (refused, yet delivered).
sub counts {
	my ($self) = @_;
	my $d = $self->delivered_counts;
	my %c = map { $_ => 0 } qw(tried accepted refused unknown delivered lost duplicated leaked);
	for my $tag (@{ $self->{order} }) {
		my $s = $self->{state}{$tag};
		my $n = $d->{$tag} // 0;
		$c{tried}++;
		$c{$s}++;
		$c{delivered}++ if $n;
		$c{duplicated}++ if $n > 1;
		$c{lost}++ if $s eq 'accepted' && $n == 0;
		$c{leaked}++ if $s eq 'refused' && $n > 0;
	}
	return \%c;
}

# check(NAME, %opt): wait (bounded) until every accepted message is at the
# backend, then test the invariant and report the counts.  Options:
# min_accepted (the test also wants at least this many 250s), settle
# (seconds to wait for refused ones that might still arrive, default 1).
sub check {
	my ($self, $name, %o) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	SmtpChainTest::wait_until(sub { $self->counts->{lost} == 0 }, $o{timeout} || 30, 0.1);
	Time::HiRes::sleep($o{settle} // 1);	# not an assertion: a late leak still shows
	my $c = $self->counts;
	my $d = $self->delivered_counts;
	my $report = join(' ', map { "$_=$c->{$_}" } qw(tried accepted refused unknown delivered lost duplicated leaked));
	note("$name: $report");
	my @bad;
	for my $tag (@{ $self->{order} }) {
		my ($s, $n) = ($self->{state}{$tag}, $d->{$tag} // 0);
		push @bad, "$tag: $s, at the backend $n times"
		    if ($s eq 'accepted' && $n != 1) || ($s eq 'refused' && $n) || $n > 1;
	}
	my $ok = ok(!@bad && $c->{lost} == 0, "$name: no message lost, duplicated or leaked ($report)");
	diag(join("\n", @bad[0 .. ($#bad < 19 ? $#bad : 19)])) unless $ok;
	if (defined $o{min_accepted}) {
		ok($c->{accepted} >= $o{min_accepted}, "$name: at least $o{min_accepted} accepted")
		    or diag("accepted: $c->{accepted}");
	}
	return $c;
}

1;
