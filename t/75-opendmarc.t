# 75-opendmarc.t - OpenDMARC (Debian's, 1.4) through the milter module,
# compared with the same milter behind a private Postfix.
#
# Offline: the test's DNS server (t/lib/SmtpChainTest/DNS.pm) serves the
# _dmarc and SPF records; OpenDMARC (SPFSelfValidate, RejectFailures) runs in
# a mount namespace where /etc/resolv.conf names only that server and
# /dev/log is a datagram socket the test reads (OpenDMARC logs only to
# syslog).  Each message goes through the proxy (whose backend is a plain
# private Postfix) and through a private Postfix with OpenDMARC, into one
# smtp-sink; the test compares the client's replies, the header section,
# the body and the envelope, and reads OpenDMARC's log.
use strict;
use warnings;

use IO::Socket::UNIX;
use POSIX qw(_exit);
use Socket qw(SOCK_DGRAM);
use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix and a mount namespace need root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
plan skip_all => "$module is not built" unless -f $module;
my $opendmarc = SmtpChainTest::find_program('opendmarc');
plan skip_all => 'opendmarc is needed (apt-get install opendmarc)' unless $opendmarc;
eval { require Net::DNS::Nameserver; 1 } or plan skip_all => 'libnet-dns-perl is needed';
require SmtpChainTest::DNS;

my $dir = tmpdir();
my $dns = SmtpChainTest::DNS->start(records => {
	'pass.test' => [ [TXT => 'v=spf1 ip4:127.0.0.0/8 -all'] ],
	'_dmarc.pass.test' => [ [TXT => 'v=DMARC1; p=reject'] ],
	'fail.test' => [ [TXT => 'v=spf1 -all'] ],
	'_dmarc.fail.test' => [ [TXT => 'v=DMARC1; p=reject'] ],
	'other.test' => [ [TXT => 'v=spf1 ip4:127.0.0.0/8 -all'] ],
	'nodmarc.test' => [ [TXT => 'v=spf1 ip4:127.0.0.0/8 -all'] ],
});

# OpenDMARC's syslog: a datagram socket read by a child into a file.
my $slog = "$dir/opendmarc.syslog";
spew($slog, '');
my $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => "$dir/log.sock")
    or die "log socket: $!\n";
chmod 0666, "$dir/log.sock";
my $lpid = fork() // die "fork: $!\n";
if ($lpid == 0) {
	setpgrp(0, 0);
	$SIG{TERM} = 'DEFAULT';
	open(my $f, '>>', $slog) or _exit(1);
	$f->autoflush(1);
	while (1) {
		my $m;
		defined $sock->recv($m, 65536) or last;
		print $f "$m\n";
	}
	_exit(0);
}
close $sock;
SmtpChainTest::on_cleanup('syslog reader', sub { SmtpChainTest::stop_pid($lpid, 'TERM', 5) });

my $mport = free_port();
spew("$dir/ignore", '');
spew("$dir/opendmarc.conf", "AuthservID postfix.test\nBackground false\nIgnoreHosts $dir/ignore\n" .
    "PidFile $dir/opendmarc.pid\nPublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat\n" .
    "RejectFailures true\nSocket inet:$mport\@127.0.0.1\nSPFSelfValidate true\nSyslog true\n" .
    "SyslogFacility mail\nUserID root\n");
# In its own mount namespace: the DNS server's resolv.conf, and a /dev of
# our own whose log is the socket above (this machine's /dev has no log).
mkdir "$dir/dev";
my $resolv = $dns->resolv_conf;
spew("$dir/ns.sh", <<"NSEOF");
d=$dir
mount --bind $resolv /etc/resolv.conf || exit 1
for n in null zero random urandom; do : > \$d/dev/\$n; mount --bind /dev/\$n \$d/dev/\$n || exit 1; done
: > \$d/dev/log; mount --bind \$d/log.sock \$d/dev/log || exit 1
mount --rbind \$d/dev /dev || exit 1
exec "\$@"
NSEOF
my $mpid = SmtpChainTest::spawn(argv => ['unshare', '-m', '--propagation', 'private', '--', 'sh',
    "$dir/ns.sh", $opendmarc, '-c', "$dir/opendmarc.conf", '-f'], output => "$dir/opendmarc.out");
SmtpChainTest::on_cleanup("opendmarc $mpid", sub { SmtpChainTest::stop_pid($mpid, 'TERM', 20) });
wait_until(sub { SmtpChainTest::port_listening($mport) || !proc_alive($mpid) }, 60, 0.1);
die "opendmarc did not start: " . (slurp("$dir/opendmarc.out") // '') . "\n"
    unless SmtpChainTest::port_listening($mport);

our $sink = start_sink();
my $backend = start_postfix(name => 'backend', relay_port => $sink->port);
my $pm = start_postfix(name => 'postfix-opendmarc', relay_port => $sink->port,
    main => "smtpd_milters = inet:127.0.0.1:$mport\nmilter_default_action = tempfail\n" .
	"milter_protocol = 6\n");
my $p = start_proxy(qq{backend = "127.0.0.1:${\ $backend->port}";\nhostname = "postfix.test";\n} .
    qq{workers = 1;\nspool_dir = "$dir";\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
    qq{filter {\n\tmodule = "$module";\n\tsocket = "inet:127.0.0.1:$mport";\n}\n}, name => 'proxy');

my %BODY;

# The domains of a case: From: and MAIL FROM.
sub from_domain {
	my ($w) = @_;
	return ($w // '') =~ /^fail/ ? 'fail.test' : ($w // '') =~ /^none/ ? 'nodmarc.test' : 'pass.test';
}
sub mail_domain { ($_[0] // '') =~ /^fail/ ? 'other.test' : from_domain($_[0]) }

my $seq = 0;

# A message; the Subject carries the words and a tag.
sub message {
	my ($words, %o) = @_;
	my $tag = sprintf('r%d-%d', $$, ++$seq);
	my $body = $o{body} // "Hello.\r\nSecond line.\r\n";
	$body = $BODY{$words} if $BODY{$words};
	my $text = "Received: from upstream.example (upstream.example [192.0.2.1])\r\n" .
	    "\tby mx.upstream.example; Tue, 24 Nov 2026 07:59:00 +0000\r\n" .
	    "From: <sender\@" . from_domain($words) . ">\r\nTo: <rcpt\@example.test>\r\n" .
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
		# The MTA's Received: is left out: OpenDMARC inserts its
		# Authentication-Results at index 0, above Postfix's Received:
		# behind Postfix, and just below the backend's behind the proxy.
		next if $n eq 'Received' && $v !~ /upstream/;
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
		push @{ $r{msgs} }, $c->send_mail(from => 'sender@' . mail_domain($m->[2]), to => ['rcpt@example.test'],
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
		my @msgs = map { [message(ref $_ ? @$_ : $_), ref $_ ? $_->[0] : $_] } @words;
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

# --- pass, fail (p=reject: refused), no DMARC record
my @one = compare('verdicts', 'pass', 'fail', 'none');
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'pass: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^Authentication-Results: postfix\.test; dmarc=pass/m, 'pass: dmarc=pass');
like($one[1]{raw_reply}{raw} // '', qr/^550 5\.7\.1 rejected by DMARC policy for fail\.test/, 'fail: rejected by the policy');
like($one[2]{m} ? $one[2]{m}{message} : '', qr/^Authentication-Results: postfix\.test; dmarc=none/m, 'none: dmarc=none');
# Index 0 behind the proxy: just below the backend's Received:.
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^Received: from client\.test[^\n]*\n(?:\t[^\n]*\n)*Authentication-Results: /m,
    'pass: Authentication-Results (index 0) just below the backend\'s Received:');

# --- a 700 KB body, a mixed session
compare('big', ['pass big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
compare('mixed', 'fail', 'pass', 'none', 'fail', 'pass');

# --- 20 messages in one session: OpenDMARC logs each under its own {i}
{
	my $before = length(slurp($slog) // '');
	my @msgs = map { [message('pass twenty'), 'pass'] } 1 .. 20;
	my $r = session($p->port, @msgs);
	is(scalar(grep { $_->{end}{code} && $_->{end}{code} == 250 } @{ $r->{msgs} }), 20, 'twenty messages: 250 each');
	wait_until(sub { (() = substr(slurp($slog) // '', $before) =~ /: pass\.test pass/g) >= 20 }, 30);
	my @ids = substr(slurp($slog) // '', $before) =~ /opendmarc\[\d+\]: (\S+): pass\.test pass/g;
	my %distinct = map { $_ => 1 } @ids;
	is(scalar(keys %distinct), 20, 'twenty messages: twenty distinct ids in OpenDMARC\'s log') or diag("@ids");
	like($ids[0] // '', qr/^[0-9A-F]+\.\d+$/, 'twenty messages: the ids are the proxy\'s message ids');
}

# --- clients that connect and leave at once
{
	my $before = length(slurp($slog) // '');
	for (1 .. 3) {
		my $c = smtp_connect($p->port) or die "connect: $@\n";
		$c->close;
	}
	my $r = session($p->port, [message('pass after drops'), 'pass']);
	reply_ok($r->{msgs}[0]{end}, 250, undef, 'after three dropped clients: a message goes through');
	unlike(substr(slurp($slog) // '', $before), qr/error|warning|failed/i, 'dropped clients: nothing wrong in OpenDMARC\'s log');
}
unlike(slurp($slog) // '', qr/error|warning/i, 'OpenDMARC logged no error or warning');
ok(scalar(grep { /_dmarc\.pass\.test TXT/ } $dns->queries), 'OpenDMARC asked the test\'s DNS server');

# --- the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
		my @r = ($c->read_reply, $c->ehlo('client.test'), $c->cmd('MAIL FROM:<sender@pass.test>'));
		$c->quit;
		$got{$name} = [(map { $_ && $_->{code} ? $_->{code} : 0 } @r[0, 1]), $r[2]{raw} // ''];
	}
	is_deeply($got{proxy}, $got{postfix}, 'OpenDMARC stopped: 220, EHLO, MAIL answered as by Postfix')
	    or diag(explain(\%got));
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
