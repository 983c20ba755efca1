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
use SmtpChainTest::MilterCompare;

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
my $mpid = SmtpChainTest::MilterCompare::start_milter(name => 'opendmarc',
    argv => ['unshare', '-m', '--propagation', 'private', '--', 'sh', "$dir/ns.sh", $opendmarc,
	'-c', "$dir/opendmarc.conf", '-f'], port => $mport, output => "$dir/opendmarc.out");

my ($sink, $backend, $pm, $p) = SmtpChainTest::MilterCompare::start_mtas(
    milter => "inet:127.0.0.1:$mport", postfix_name => 'postfix-opendmarc', module => $module, dir => $dir);

# The domains of a case: From: and MAIL FROM.
sub from_domain {
	my ($w) = @_;
	return ($w // '') =~ /^fail/ ? 'fail.test' : ($w // '') =~ /^none/ ? 'nodmarc.test' : 'pass.test';
}
sub mail_domain { ($_[0] // '') =~ /^fail/ ? 'other.test' : from_domain($_[0]) }

# The comparison (t/lib/SmtpChainTest/MilterCompare.pm).  The MTA's
# Received: is left out: OpenDMARC inserts its Authentication-Results at
# index 0, above Postfix's Received: behind Postfix, and just below the
# backend's behind the proxy.  The envelope sender's domain follows the
# words (the message's third element).
my $mc = SmtpChainTest::MilterCompare->new(proxy => $p, postfix => $pm, sink => $sink,
    author => sub { 'sender@' . from_domain($_[0]) },
    header => sub { my ($n, $v) = @_; $n eq 'Received' && $v !~ /upstream/ ? undef : $v },
    from => sub { 'sender@' . mail_domain($_[0][2]) });

# --- pass, fail (p=reject: refused), no DMARC record
my @one = $mc->compare('verdicts', 'pass', 'fail', 'none');
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'pass: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^Authentication-Results: postfix\.test; dmarc=pass/m, 'pass: dmarc=pass');
like($one[1]{raw_reply}{raw} // '', qr/^550 5\.7\.1 rejected by DMARC policy for fail\.test/, 'fail: rejected by the policy');
like($one[2]{m} ? $one[2]{m}{message} : '', qr/^Authentication-Results: postfix\.test; dmarc=none/m, 'none: dmarc=none');
# Index 0 behind the proxy: just below the backend's Received:.
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^Received: from client\.test[^\n]*\n(?:\t[^\n]*\n)*Authentication-Results: /m,
    'pass: Authentication-Results (index 0) just below the backend\'s Received:');

# --- a 700 KB body, a mixed session
$mc->compare('big', ['pass big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
$mc->compare('mixed', 'fail', 'pass', 'none', 'fail', 'pass');

# --- 20 messages in one session: OpenDMARC logs each under its own {i}
{
	my $before = length(slurp($slog) // '');
	my @msgs = map { [$mc->message('pass twenty'), 'pass'] } 1 .. 20;
	my $r = $mc->session($p->port, @msgs);
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
	$mc->dropped_clients([$mc->message('pass after drops'), 'pass']);
	unlike(substr(slurp($slog) // '', $before), qr/error|warning|failed/i, 'dropped clients: nothing wrong in OpenDMARC\'s log');
}
unlike(slurp($slog) // '', qr/error|warning/i, 'OpenDMARC logged no error or warning');
ok(scalar(grep { /_dmarc\.pass\.test TXT/ } $dns->queries), 'OpenDMARC asked the test\'s DNS server');

# --- the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	$mc->milter_stopped('OpenDMARC', 'sender@pass.test');
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
