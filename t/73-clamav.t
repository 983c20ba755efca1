# 73-clamav.t - clamav-milter (Debian's, 1.4) and clamd through the milter
# module, compared with the same milter behind a private Postfix.
#
# Offline: clamd with a signature database made here (sigtool --md5 of
# clamav-testfiles' clam.exe, and EICAR as an .ndb), on a unix socket;
# clamav-milter with OnInfected Reject, OnFail Defer and AddHeader Replace
# (two headers at end of message: X-Virus-Scanned, X-Virus-Status).
# Each message goes through the proxy (whose backend is a plain private
# Postfix) and through a private Postfix with clamav-milter, into one
# smtp-sink; the test compares the client's replies, the header section in
# order, the body and the envelope, and reads clamav-milter's log.
use strict;
use warnings;

use MIME::Base64 qw(encode_base64);
use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
plan skip_all => "$module is not built" unless -f $module;
my $clamd = SmtpChainTest::find_program('clamd');
my $milter = SmtpChainTest::find_program('clamav-milter');
my $sigtool = SmtpChainTest::find_program('sigtool');
my $clamexe = '/usr/share/clamav-testfiles/clam.exe';
plan skip_all => 'clamav-daemon, clamav-milter and clamav-testfiles are needed'
    unless $clamd && $milter && $sigtool && -f $clamexe;

my $dir = tmpdir();
mkdir "$dir/db";
my $hdb = `$sigtool --md5 $clamexe`;
like($hdb, qr/^[0-9a-f]{32}:\d+:clam\.exe$/m, 'sigtool made the clam.exe signature');
spew("$dir/db/test.hdb", $hdb);
spew("$dir/db/eicar.ndb", "Eicar-Test-Signature:0:*:" . unpack('H*',
    'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*') . "\n");
my $EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
my $mport = free_port();
my $mlog = "$dir/clamav-milter.log";
spew("$dir/clamd.conf", "DatabaseDirectory $dir/db\nLocalSocket $dir/clamd.sock\nForeground yes\n" .
    "LogFile $dir/clamd.log\nTemporaryDirectory $dir\nUser root\n");
spew("$dir/clamav-milter.conf", "MilterSocket inet:$mport\@127.0.0.1\nClamdSocket unix:$dir/clamd.sock\n" .
    "OnInfected Reject\nOnFail Defer\nAddHeader Replace\nLogFile $mlog\nLogInfected Full\n" .
    "LogClean Full\nForeground yes\nUser root\n");

my ($cpid, $mpid);
sub start_clamd {
	$cpid = SmtpChainTest::spawn(argv => [$clamd, '-c', "$dir/clamd.conf"], output => "$dir/clamd.out");
	my $pid = $cpid;
	SmtpChainTest::on_cleanup("clamd $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	# Loading the signatures: wait for the socket (bounded), not a fixed time.
	wait_until(sub { -S "$dir/clamd.sock" || !proc_alive($pid) }, 120, 0.1);
	die "clamd did not start: " . (slurp("$dir/clamd.out") // '') . "\n" unless -S "$dir/clamd.sock";
}
sub start_clamav_milter {
	$mpid = SmtpChainTest::spawn(argv => [$milter, '-c', "$dir/clamav-milter.conf"],
	    output => "$dir/clamav-milter.out");
	my $pid = $mpid;
	SmtpChainTest::on_cleanup("clamav-milter $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	wait_until(sub { SmtpChainTest::port_listening($mport) || !proc_alive($pid) }, 60, 0.1);
	die "clamav-milter did not start: " . (slurp("$dir/clamav-milter.out") // '') . "\n"
	    unless SmtpChainTest::port_listening($mport);
}
start_clamd();
start_clamav_milter();

our $sink = start_sink();
my $backend = start_postfix(name => 'backend', relay_port => $sink->port);
my $pm = start_postfix(name => 'postfix-clamav', relay_port => $sink->port,
    main => "smtpd_milters = inet:127.0.0.1:$mport\nmilter_default_action = tempfail\n" .
	"milter_protocol = 6\n");
my $p = start_proxy(qq{backend = "127.0.0.1:${\ $backend->port}";\nhostname = "postfix.test";\n} .
    qq{workers = 1;\nspool_dir = "$dir";\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
    qq{filter {\n\tmodule = "$module";\n\tsocket = "inet:127.0.0.1:$mport";\n}\n}, name => 'proxy');

my %BODY = (
	eicar => "Hello.\r\n$EICAR\r\n",
	clamexe => "This is a MIME message.\r\n--b\r\nContent-Type: application/octet-stream\r\n" .
	    "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=clam.exe\r\n\r\n" .
	    join("\r\n", split /\n/, encode_base64(slurp($clamexe))) . "\r\n--b--\r\n",
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
		$v =~ s/ on \S+$/ on HOST/ if $n eq 'X-Virus-Scanned';
		push @h, "$n: $v";
	}
	return \@h;
}

sub body_of { (split /\n\n/, $_[0]{message}, 2)[1] // '' }

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
			    body => $m[0] ? body_of($m[0]) : '',
			    env => $m[0] ? [$m[0]{mail}, @{ $m[0]{rcpt} }] : [] };
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

# --- clean, EICAR, clam.exe attached
my @one = compare('verdicts', 'clean', 'eicar', ['clamexe', headers => "MIME-Version: 1.0\r\n" .
    "Content-Type: multipart/mixed; boundary=b\r\n"]);
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'clean: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^X-Virus-Status: Clean$/m, 'clean: X-Virus-Status: Clean');
like($one[1]{raw_reply}{raw} // '', qr/^5\d\d /, 'EICAR: refused');
like($one[2]{raw_reply}{raw} // '', qr/^5\d\d /, 'clam.exe: refused');

# --- a 700 KB body, a forged X-Virus-Status the milter replaces
compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
compare('forged', ['clean forged', headers => "X-Virus-Status: Clean forged\r\nX-Virus-Scanned: forged\r\n"]);

# --- a mixed session
compare('mixed', 'eicar', 'clean', 'clamexe', 'clean');

# --- 20 messages in one session: clamav-milter logs each with its own {i}
{
	my $before = length(slurp($mlog) // '');
	my @msgs = map { [message('clean twenty')] } 1 .. 20;
	my $r = session($p->port, @msgs);
	is(scalar(grep { $_->{end}{code} && $_->{end}{code} == 250 } @{ $r->{msgs} }), 20, 'twenty messages: 250 each');
	wait_until(sub { (() = substr(slurp($mlog) // '', $before) =~ /Clean message/g) >= 20 }, 30);
	my @ids = substr(slurp($mlog) // '', $before) =~ /Clean message (\S+) from/g;
	my %distinct = map { $_ => 1 } @ids;
	is(scalar(keys %distinct), 20, 'twenty messages: twenty distinct ids in clamav-milter\'s log') or diag("@ids");
	like($ids[0] // '', qr/^[0-9A-F]+\.\d+$/, 'twenty messages: the ids are the proxy\'s message ids');
}

# --- clients that connect and leave at once
{
	my $before = length(slurp($mlog) // '');
	for (1 .. 3) {
		my $c = smtp_connect($p->port) or die "connect: $@\n";
		$c->close;
	}
	my $r = session($p->port, [message('clean after drops')]);
	reply_ok($r->{msgs}[0]{end}, 250, undef, 'after three dropped clients: a message goes through');
	unlike(substr(slurp($mlog) // '', $before), qr/error|warning/i, 'dropped clients: no error in clamav-milter\'s log');
}
unlike(slurp($mlog) // '', qr/ERROR|WARNING/, 'clamav-milter logged no error or warning');

# --- clamd stopped (OnFail Defer), then the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($cpid, 'TERM', 20);
	unlink "$dir/clamd.sock";
	compare('clamd stopped', 'clean');
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
		my @r = ($c->read_reply, $c->ehlo('client.test'), $c->cmd('MAIL FROM:<sender@client.test>'));
		$c->quit;
		$got{$name} = [(map { $_ && $_->{code} ? $_->{code} : 0 } @r[0, 1]), $r[2]{raw} // ''];
	}
	is_deeply($got{proxy}, $got{postfix}, 'clamav-milter stopped: 220, EHLO, MAIL answered as by Postfix')
	    or diag(explain(\%got));
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
