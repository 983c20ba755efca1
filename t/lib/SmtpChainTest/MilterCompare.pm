# SmtpChainTest::MilterCompare - the comparison the real-milter tests (t/72
# to t/75) make: the same messages through the proxy (with the milter module)
# and through a private Postfix with the same milter, into one sink.
#
#   my $mpid = SmtpChainTest::MilterCompare::start_milter(name => 'opendmarc',
#       argv => [...], port => $mport, output => "$dir/opendmarc.out");
#   my ($sink, $backend, $pm, $p) = SmtpChainTest::MilterCompare::start_mtas(
#       milter => "inet:127.0.0.1:$mport", postfix_name => 'postfix-opendmarc',
#       module => $module, dir => $dir);
#   my $mc = SmtpChainTest::MilterCompare->new(proxy => $p, postfix => $pm,
#       sink => $sink, bodies => { eicar => "..." },  # optional, see below
#       header => sub { my ($n, $v) = @_; ...; $v });
#   my @proxy = $mc->compare('verdicts', 'clean', ['big', body => $b]);
#   my $r = $mc->session($p->port, [$mc->message('clean')]);
#   $mc->dropped_clients([$mc->message('clean after drops')]);
#   my $got = $mc->milter_stopped('rspamd', 'sender@client.test');
#
# message(words, body => ..., headers => ...) makes a message whose Subject:
# carries the words and a tag (tagged_message()).  compare() builds each
# message twice (message(words), or message(@list) for a list reference; the
# words go with it as its third element), sends them in one session through
# each path, waits in the sink for those accepted with 250, and checks per
# message: the client's reply (queue id aside), delivered or not, and when
# delivered the header section in order, the body and the envelope.  It
# returns the proxy's results ({reply, raw_reply, tag, delivered, m,
# headers, body, env} per message).
#
# What differs between milters comes in as options, each optional:
#   bodies    { words => body }: the body of a message with these words
#   author    ($words) -> the From: address of the message
#   message   ($words, %o) -> (tag, text): instead of tagged_message()
#   header    ($name, $value) -> the value to compare, undef to leave the
#             header out; after it, the MTA's Received: values (all but the
#             upstream one) become RECEIVED
#   body      ($body, $tag) -> the body to compare
#   mail      ($mail) -> the MAIL FROM the sink saw, to compare
#   delivers  ($words) -> false if a 250 for this message delivers nothing
#   from      ($msg) -> the envelope sender for this message of session()
package SmtpChainTest::MilterCompare;

use strict;
use warnings;
use Test::More;

use SmtpChainTest qw(smtp_connect reply_ok start_sink start_postfix start_proxy wait_until slurp
    proc_alive);

# Start a milter daemon (argv, its output to output) that listens on
# 127.0.0.1:port; wait (bounded) until it does; stopped by pid at the end.
# Returns its pid.
sub start_milter {
	my (%o) = @_;
	my $pid = SmtpChainTest::spawn(argv => $o{argv}, output => $o{output});
	SmtpChainTest::on_cleanup("$o{name} $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	wait_until(sub { SmtpChainTest::port_listening($o{port}) || !proc_alive($pid) }, 60, 0.1);
	die "$o{name} did not start: " . (slurp($o{output}) // '') . "\n"
	    unless SmtpChainTest::port_listening($o{port});
	return $pid;
}

# The sink; a plain Postfix in front of it, the proxy's backend; a Postfix
# (postfix_name) with the milter (socket milter; main: more main.cf lines);
# the proxy (hostname postfix.test, the name of the Postfix it stands for;
# spool_dir dir; conf: more lines) with the milter module (module) on the
# same milter.  Returns (sink, backend, postfix, proxy).
sub start_mtas {
	my (%o) = @_;
	my $sink = start_sink();
	my $backend = start_postfix(name => 'backend', relay_port => $sink->port);
	my $pm = start_postfix(name => $o{postfix_name}, relay_port => $sink->port,
	    main => "smtpd_milters = $o{milter}\nmilter_default_action = tempfail\n" .
		"milter_protocol = 6\n" . ($o{main} // ''));
	my $p = start_proxy(qq{backend = "127.0.0.1:${\ $backend->port}";\nhostname = "postfix.test";\n} .
	    qq{workers = 1;\nspool_dir = "$o{dir}";\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
	    ($o{conf} // '') .
	    qq{filter {\n\tmodule = "$o{module}";\n\tsocket = "$o{milter}";\n}\n}, name => 'proxy');
	return ($sink, $backend, $pm, $p);
}

my $seq = 0;

# A message (from the sender in from, default sender@client.test) whose
# Subject: carries the words and a tag unique in the run, below an upstream
# Received:; headers (text) go at the end of the header section; body
# (default two lines).  Returns (tag, text).
sub tagged_message {
	my ($words, %o) = @_;
	my $tag = sprintf('r%d-%d', $$, ++$seq);
	my $body = $o{body} // "Hello.\r\nSecond line.\r\n";
	my $from = $o{from} // 'sender@client.test';
	my $text = "Received: from upstream.example (upstream.example [192.0.2.1])\r\n" .
	    "\tby mx.upstream.example; Tue, 24 Nov 2026 07:59:00 +0000\r\n" .
	    "From: <$from>\r\nTo: <rcpt\@example.test>\r\n" .
	    "Subject: $words $tag\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n" . ($o{headers} // '') . "\r\n$body";
	return ($tag, $text);
}

sub new {
	my ($class, %o) = @_;
	for (qw(proxy postfix sink)) {
		die "SmtpChainTest::MilterCompare: $_ is needed\n" unless $o{$_};
	}
	return bless { %o }, $class;
}

# A message of these words (see tagged_message); returns (tag, text).
sub message {
	my ($self, $words, %o) = @_;
	return $self->{message}->($words, %o) if $self->{message};
	$o{body} = $self->{bodies}{$words} if $self->{bodies} && $self->{bodies}{$words};
	$o{from} = $self->{author}->($words) if $self->{author};
	return tagged_message($words, %o);
}

# The reply as text, the queue id aside; 'none' for no reply.
sub reply_norm {
	my ($self, $r) = @_;
	return 'none' unless $r && $r->{code};
	(my $raw = $r->{raw}) =~ s/queued as \S+/queued as ID/g;
	return $raw;
}

# The headers of a delivered message as "Name: value" (unfolded), in order;
# the tag becomes TAG.
sub headers_norm {
	my ($self, $m, $tag) = @_;
	(my $text = $m->{message}) =~ s/\Q$tag\E/TAG/g;
	my ($head) = split /\n\n/, $text, 2;
	$head =~ s/\n[ \t]+/ /g;
	my @h;
	for (split /\n/, $head) {
		next unless /^([^:]+):\s?(.*)$/;
		my ($n, $v) = ($1, $2);
		$v = $self->{header}->($n, $v) if $self->{header};
		next unless defined $v;
		$v = 'RECEIVED' if $n eq 'Received' && $v !~ /upstream/;
		push @h, "$n: $v";
	}
	return \@h;
}

sub body_of {
	my ($self, $m, $tag) = @_;
	my $b = (split /\n\n/, $m->{message}, 2)[1] // '';
	return $self->{body} ? $self->{body}->($b, $tag) : $b;
}

# One session through port: greeting, EHLO, each message; returns the replies.
sub session {
	my ($self, $port, @msgs) = @_;
	my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
	my %r = (greeting => $c->read_reply);
	$r{ehlo} = $c->ehlo('client.test');
	for my $m (@msgs) {
		my $from = $self->{from} ? $self->{from}->($m) : 'sender@client.test';
		push @{ $r{msgs} }, $c->send_mail(from => $from, to => ['rcpt@example.test'], data => $m->[1]);
	}
	$c->quit;
	return \%r;
}

# The same messages (built from these words) through the proxy and through
# Postfix, in one session each; compares everything; returns the proxy's
# end replies and delivered messages.
sub compare {
	my ($self, $what, @words) = @_;
	my $sink = $self->{sink};
	my %got;
	for my $via (['proxy', $self->{proxy}->port], ['postfix', $self->{postfix}->port]) {
		my ($name, $port) = @$via;
		my @msgs = map { [$self->message(ref $_ ? @$_ : $_), ref $_ ? $_->[0] : $_] } @words;
		my $r = $self->session($port, @msgs);
		my @out;
		for my $i (0 .. $#msgs) {
			my ($tag) = @{ $msgs[$i] };
			my $end = $r->{msgs}[$i]{end};
			my $want = $end && $end->{code} && $end->{code} == 250 &&
			    (!$self->{delivers} || $self->{delivers}->($msgs[$i][2]));
			my @m = $want ? $sink->wait_find(qr/\Q$tag\E/, 60) : ();
			push @out, { reply => $self->reply_norm($end), tag => $tag, raw_reply => $end,
			    delivered => scalar(@m), m => $m[0],
			    headers => $m[0] ? $self->headers_norm($m[0], $tag) : [],
			    body => $m[0] ? $self->body_of($m[0], $tag) : '',
			    env => $m[0] ? [($self->{mail} ? $self->{mail}->($m[0]{mail}) : $m[0]{mail}),
				@{ $m[0]{rcpt} }] : [] };
		}
		$got{$name} = \@out;
	}
	for my $i (0 .. $#words) {
		my ($a, $b) = ($got{proxy}[$i], $got{postfix}[$i]);
		my $w = ref $words[$i] ? $words[$i][0] : $words[$i];
		is($a->{reply}, $b->{reply}, "$what ($w): the client's reply as through Postfix");
		is($a->{delivered}, $b->{delivered}, "$what ($w): delivered as through Postfix");
		next unless $a->{delivered} && $b->{delivered};
		is_deeply($a->{headers}, $b->{headers}, "$what ($w): the header section, in order, as through Postfix")
		    or diag(explain($a->{headers}), explain($b->{headers}));
		is($a->{body}, $b->{body}, "$what ($w): the body as through Postfix");
		is_deeply($a->{env}, $b->{env}, "$what ($w): the envelope as through Postfix");
	}
	return @{ $got{proxy} };
}

# Three clients that connect to the proxy and leave at once, then a session
# with this message: it must get 250.  Returns that session's replies.
sub dropped_clients {
	my ($self, $msg) = @_;
	for (1 .. 3) {
		my $c = smtp_connect($self->{proxy}->port) or die "connect: $@\n";
		$c->close;
	}
	my $r = $self->session($self->{proxy}->port, $msg);
	reply_ok($r->{msgs}[0]{end}, 250, undef, 'after three dropped clients: a message goes through');
	return $r;
}

# With the milter stopped: the greeting, EHLO and MAIL FROM:<from> answered
# by the proxy as by Postfix (codes, and MAIL's whole reply).  Returns
# { proxy => [...], postfix => [...] }.
sub milter_stopped {
	my ($self, $who, $from) = @_;
	my %got;
	for my $via (['proxy', $self->{proxy}->port], ['postfix', $self->{postfix}->port]) {
		my ($name, $port) = @$via;
		my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
		my @r = ($c->read_reply, $c->ehlo('client.test'), $c->cmd("MAIL FROM:<$from>"));
		$c->quit;
		$got{$name} = [(map { $_ && $_->{code} ? $_->{code} : 0 } @r[0, 1]), $r[2]{raw} // ''];
	}
	is_deeply($got{proxy}, $got{postfix}, "$who stopped: 220, EHLO, MAIL answered as by Postfix")
	    or diag(explain(\%got));
	return \%got;
}

1;
