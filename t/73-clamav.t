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
use SmtpChainTest::MilterCompare;

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
start_clamd();
$mpid = SmtpChainTest::MilterCompare::start_milter(name => 'clamav-milter',
    argv => [$milter, '-c', "$dir/clamav-milter.conf"], port => $mport, output => "$dir/clamav-milter.out");

my ($sink, $backend, $pm, $p) = SmtpChainTest::MilterCompare::start_mtas(
    milter => "inet:127.0.0.1:$mport", postfix_name => 'postfix-clamav', module => $module, dir => $dir);

my %BODY = (
	eicar => "Hello.\r\n$EICAR\r\n",
	clamexe => "This is a MIME message.\r\n--b\r\nContent-Type: application/octet-stream\r\n" .
	    "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=clam.exe\r\n\r\n" .
	    join("\r\n", split /\n/, encode_base64(slurp($clamexe))) . "\r\n--b--\r\n",
);

# The comparison (t/lib/SmtpChainTest/MilterCompare.pm): the host in
# X-Virus-Scanned aside.
my $mc = SmtpChainTest::MilterCompare->new(proxy => $p, postfix => $pm, sink => $sink,
    bodies => \%BODY,
    header => sub { my ($n, $v) = @_; $v =~ s/ on \S+$/ on HOST/ if $n eq 'X-Virus-Scanned'; $v });

# --- clean, EICAR, clam.exe attached
my @one = $mc->compare('verdicts', 'clean', 'eicar', ['clamexe', headers => "MIME-Version: 1.0\r\n" .
    "Content-Type: multipart/mixed; boundary=b\r\n"]);
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'clean: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^X-Virus-Status: Clean$/m, 'clean: X-Virus-Status: Clean');
like($one[1]{raw_reply}{raw} // '', qr/^5\d\d /, 'EICAR: refused');
like($one[2]{raw_reply}{raw} // '', qr/^5\d\d /, 'clam.exe: refused');

# --- a 700 KB body, a forged X-Virus-Status the milter replaces
$mc->compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
$mc->compare('forged', ['clean forged', headers => "X-Virus-Status: Clean forged\r\nX-Virus-Scanned: forged\r\n"]);

# --- a mixed session
$mc->compare('mixed', 'eicar', 'clean', 'clamexe', 'clean');

# --- 20 messages in one session: clamav-milter logs each with its own {i}
{
	my $before = length(slurp($mlog) // '');
	my @msgs = map { [$mc->message('clean twenty')] } 1 .. 20;
	my $r = $mc->session($p->port, @msgs);
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
	$mc->dropped_clients([$mc->message('clean after drops')]);
	unlike(substr(slurp($mlog) // '', $before), qr/error|warning/i, 'dropped clients: no error in clamav-milter\'s log');
}
unlike(slurp($mlog) // '', qr/ERROR|WARNING/, 'clamav-milter logged no error or warning');

# --- clamd stopped (OnFail Defer), then the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($cpid, 'TERM', 20);
	unlink "$dir/clamd.sock";
	$mc->compare('clamd stopped', 'clean');
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	$mc->milter_stopped('clamav-milter', 'sender@client.test');
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
