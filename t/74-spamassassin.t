# 74-spamassassin.t - spamass-milter (Debian's, 0.4) and spamd (SpamAssassin
# 4.0) through the milter module, compared with the same milter behind a
# private Postfix.
#
# Offline: spamd with local tests only (-L, dns_available no,
# skip_rbl_checks 1, no Bayes, no auto-whitelist) and a local rule that
# scores a word 8 (tagged: SpamAssassin's report replaces the body);
# GTUBE scores 1000 and spamass-milter rejects at 15 (-r 15).  Each message
# goes through the proxy (whose backend is a plain private Postfix) and
# through a private Postfix with spamass-milter, into one smtp-sink; the
# test compares the client's replies, the header section in order, the
# body and the envelope.  spamass-milter logs only to syslog: its log is
# not read here.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
plan skip_all => "$module is not built" unless -f $module;
my $spamd = SmtpChainTest::find_program('spamd') || (-x '/usr/sbin/spamd' ? '/usr/sbin/spamd' : undef);
my $milter = SmtpChainTest::find_program('spamass-milter');
plan skip_all => 'spamd, spamc and spamass-milter are needed (apt-get install spamd spamc spamass-milter)'
    unless $spamd && $milter && SmtpChainTest::find_program('spamc');

my $dir = tmpdir();
mkdir "$dir/sa";
for my $pre (glob('/etc/spamassassin/*.pre')) {	# the plugins SpamAssassin loads
	(my $name = $pre) =~ s{.*/}{};
	spew("$dir/sa/$name", slurp($pre) // '');
}
spew("$dir/sa/local.cf", "dns_available no\nskip_rbl_checks 1\nuse_bayes 0\nbayes_auto_learn 0\n" .
    "use_auto_whitelist 0\nbody SMTPCHAIN_TAG /SMTPCHAIN-TAG-ME/\nscore SMTPCHAIN_TAG 8\n");
my $sport = free_port();
my $mport = free_port();
my $slog = "$dir/spamd.log";

my ($spid, $mpid);
sub start_spamd {
	my $before = length(slurp($slog) // '');
	$spid = SmtpChainTest::spawn(argv => [$spamd, "--siteconfigpath=$dir/sa", '-L', '-i', '127.0.0.1',
	    '-p', $sport, '-A', '127.0.0.1', '--max-children=2', '--min-children=1', '-s', $slog,
	    '-r', "$dir/spamd.pid", '-u', 'nobody', '--nouser-config'], output => "$dir/spamd.out");
	my $pid = $spid;
	SmtpChainTest::on_cleanup("spamd $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	# Compiling the rules takes a while: wait for its child, not a fixed time.
	wait_until(sub { !proc_alive($pid) ||
	    substr(slurp($slog) // '', $before) =~ /server successfully spawned child/ }, 180, 0.1);
	die "spamd did not start: " . (slurp("$dir/spamd.out") // '') . "\n"
	    unless proc_alive($pid) && SmtpChainTest::port_listening($sport);
}
sub start_spamass_milter {
	$mpid = SmtpChainTest::spawn(argv => [$milter, '-p', "inet:$mport\@127.0.0.1", '-r', '15', '--',
	    '-d', '127.0.0.1', '-p', $sport], output => "$dir/spamass-milter.out");
	my $pid = $mpid;
	SmtpChainTest::on_cleanup("spamass-milter $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	wait_until(sub { SmtpChainTest::port_listening($mport) || !proc_alive($pid) }, 60, 0.1);
	die "spamass-milter did not start: " . (slurp("$dir/spamass-milter.out") // '') . "\n"
	    unless SmtpChainTest::port_listening($mport);
}
start_spamd();
start_spamass_milter();

our $sink = start_sink();
my $backend = start_postfix(name => 'backend', relay_port => $sink->port);
my $pm = start_postfix(name => 'postfix-spamass', relay_port => $sink->port,
    main => "smtpd_milters = inet:127.0.0.1:$mport\nmilter_default_action = tempfail\n" .
	"milter_protocol = 6\n");
my $p = start_proxy(qq{backend = "127.0.0.1:${\ $backend->port}";\nhostname = "postfix.test";\n} .
    qq{workers = 1;\nspool_dir = "$dir";\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
    qq{filter {\n\tmodule = "$module";\n\tsocket = "inet:127.0.0.1:$mport";\n}\n}, name => 'proxy');

my %BODY = (
	gtube => "Hello.\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
	tagme => "Hello.\r\nSMTPCHAIN-TAG-ME\r\n",
);

my $seq = 0;

# A message; the Subject carries the words and a tag.
sub message {
	my ($words, %o) = @_;
	my $tag = sprintf('r%d-%d', $$, ++$seq);
	my $body = $o{body} // "Hello.\r\nSecond line.\r\n";
	$body = $BODY{$words} if $BODY{$words};
	my $text = "Received: from upstream.example (upstream.example [192.0.2.1])\r\n" .
	    "\tby mx.upstream.example; Tue, 24 Nov 2026 07:59:00 +0000\r\n" .
	    "From: <sender\@client.test>\r\nTo: <rcpt\@example.test>\r\n" .
	    "Subject: $words $tag\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n" . ($o{headers} // '') . "\r\n$body";
	return ($tag, $text);
}

# The headers of a delivered message as "Name: value" (unfolded), in order;
# the Received: values and the queue ids are not compared.
sub headers_norm {
	my ($m, $tag) = @_;
	(my $text = $m->{message}) =~ s/\Q$tag\E/TAG/g;
	my ($head) = split /\n\n/, $text, 2;
	$head =~ s/\n[ \t]+/ /g;
	my @h;
	for (split /\n/, $head) {
		next unless /^([^:]+):\s?(.*)$/;
		my ($n, $v) = ($1, $2);
		$v = 'RECEIVED' if $n eq 'Received' && $v !~ /upstream/;
		$v =~ s/ on \S+$/ on HOST/ if $n eq 'X-Spam-Checker-Version';
		$v =~ s/=_[0-9A-F]+\.[0-9A-F]+/=_BOUNDARY/g if $n eq 'Content-Type';
		push @h, "$n: $v";
	}
	return \@h;
}

sub body_of {
	my ($m, $tag) = @_;
	my $b = (split /\n\n/, $m->{message}, 2)[1] // '';
	$b =~ s/\Q$tag\E/TAG/g if $tag;
	# SpamAssassin's report: its MIME boundary (from the time), and the
	# Received: spamass-milter makes from the macros (v, i: the MTA's name
	# and queue id) and the time.
	$b =~ s/=_[0-9A-F]+\.[0-9A-F]+/=_BOUNDARY/g;
	$b =~ s/\([^()\n]*\/8\.13\.0\) with SMTP id \S+/(MTA\/8.13.0) with SMTP id ID/g;
	$b =~ s/\d\d:\d\d:\d\d [+-]\d{4}/TIME/g;
	return $b;
}

sub reply_norm {
	my ($r) = @_;
	return 'none' unless $r && $r->{code};
	(my $raw = $r->{raw}) =~ s/queued as \S+/queued as ID/g;
	return $raw;
}

# One session through port: greeting, EHLO, each message; returns the replies.
sub session {
	my ($port, @msgs) = @_;
	my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
	my %r = (greeting => $c->read_reply);
	$r{ehlo} = $c->ehlo('client.test');
	for my $m (@msgs) {
		push @{ $r{msgs} }, $c->send_mail(from => 'sender@client.test', to => ['rcpt@example.test'],
		    data => $m->[1]);
	}
	$c->quit;
	return \%r;
}

# The same messages (built from these words) through the proxy and through
# Postfix, in one session each; compares everything; returns the proxy's
# end replies and delivered messages.
sub compare {
	my ($what, @words) = @_;
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my @msgs = map { [message(ref $_ ? @$_ : $_)] } @words;
		my $r = session($port, @msgs);
		my @out;
		for my $i (0 .. $#msgs) {
			my ($tag) = @{ $msgs[$i] };
			my $end = $r->{msgs}[$i]{end};
			my $want = $end && $end->{code} && $end->{code} == 250 &&
			    1;
			my @m = $want ? $sink->wait_find(qr/\Q$tag\E/, 60) : ();
			push @out, { reply => reply_norm($end), tag => $tag, raw_reply => $end,
			    delivered => scalar(@m), m => $m[0],
			    headers => $m[0] ? headers_norm($m[0], $tag) : [],
			    body => $m[0] ? body_of($m[0], $tag) : '',
			    # BODY=8BITMIME: the backend Postfix finds the 8bit report
			    # SpamAssassin put in the body and says so to the sink; behind
			    # Postfix the milter changes the body after cleanup looked at it.
			    env => $m[0] ? [($m[0]{mail} // '') =~ s/ BODY=8BITMIME//r, @{ $m[0]{rcpt} }] : [] };
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

# --- clean, GTUBE (rejected at 15), a tagged message (the report replaces the body)
my @one = compare('verdicts', 'clean', 'gtube', 'tagme');
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'clean: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^X-Spam-Status: No, /m, 'clean: X-Spam-Status: No');
like($one[1]{raw_reply}{raw} // '', qr/^5\d\d /, 'GTUBE: refused');
like($one[2]{m} ? $one[2]{m}{message} : '', qr/^X-Spam-Flag: YES$/m, 'tagged: X-Spam-Flag: YES');

# --- a 700 KB body, forged X-Spam-* headers the milter removes
compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
compare('forged', ['clean forged', headers => "X-Spam-Status: No, forged\r\nX-Spam-Flag: NO\r\n"]);

# --- a mixed session
compare('mixed', 'gtube', 'clean', 'tagme', 'gtube', 'clean');

# --- 20 messages in one session
{
	my @msgs = map { [message('clean twenty')] } 1 .. 20;
	my $r = session($p->port, @msgs);
	is(scalar(grep { $_->{end}{code} && $_->{end}{code} == 250 } @{ $r->{msgs} }), 20, 'twenty messages: 250 each');
	my $n = 0;
	for my $m (@msgs) {
		my ($d) = $sink->wait_find(qr/\Q$m->[0]\E/, 60);
		$n++ if $d && $d->{message} =~ /^X-Spam-Status: No, /m;
	}
	is($n, 20, 'twenty messages: each scanned');
}

# --- clients that connect and leave at once, then a message
{
	for (1 .. 3) {
		my $c = smtp_connect($p->port) or die "connect: $@\n";
		$c->close;
	}
	my $r = session($p->port, [message('clean after drops')]);
	reply_ok($r->{msgs}[0]{end}, 250, undef, 'after three dropped clients: a message goes through');
	ok(proc_alive($mpid), 'spamass-milter is still running');
}

# --- spamd stopped, then the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($spid, 'TERM', 20);
	compare('spamd stopped', 'clean');
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
		my @r = ($c->read_reply, $c->ehlo('client.test'), $c->cmd('MAIL FROM:<sender@client.test>'));
		$c->quit;
		$got{$name} = [(map { $_ && $_->{code} ? $_->{code} : 0 } @r[0, 1]), $r[2]{raw} // ''];
	}
	is_deeply($got{proxy}, $got{postfix}, 'spamass-milter stopped: 220, EHLO, MAIL answered as by Postfix')
	    or diag(explain(\%got));
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
