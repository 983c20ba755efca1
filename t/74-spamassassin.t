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
use SmtpChainTest::MilterCompare;

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
start_spamd();
$mpid = SmtpChainTest::MilterCompare::start_milter(name => 'spamass-milter',
    argv => [$milter, '-p', "inet:$mport\@127.0.0.1", '-r', '15', '--', '-d', '127.0.0.1', '-p', $sport],
    port => $mport, output => "$dir/spamass-milter.out");

my ($sink, $backend, $pm, $p) = SmtpChainTest::MilterCompare::start_mtas(
    milter => "inet:127.0.0.1:$mport", postfix_name => 'postfix-spamass', module => $module, dir => $dir);

my %BODY = (
	gtube => "Hello.\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
	tagme => "Hello.\r\nSMTPCHAIN-TAG-ME\r\n",
);

# The comparison (t/lib/SmtpChainTest/MilterCompare.pm): the host in
# X-Spam-Checker-Version and the MIME boundaries aside.
my $mc = SmtpChainTest::MilterCompare->new(proxy => $p, postfix => $pm, sink => $sink,
    bodies => \%BODY,
    header => sub {
	my ($n, $v) = @_;
	$v =~ s/ on \S+$/ on HOST/ if $n eq 'X-Spam-Checker-Version';
	$v =~ s/=_[0-9A-F]+\.[0-9A-F]+/=_BOUNDARY/g if $n eq 'Content-Type';
	return $v;
    },
    body => sub {
	my ($b, $tag) = @_;
	$b =~ s/\Q$tag\E/TAG/g if $tag;
	# SpamAssassin's report: its MIME boundary (from the time), and the
	# Received: spamass-milter makes from the macros (v, i: the MTA's name
	# and queue id) and the time.
	$b =~ s/=_[0-9A-F]+\.[0-9A-F]+/=_BOUNDARY/g;
	$b =~ s/\([^()\n]*\/8\.13\.0\) with SMTP id \S+/(MTA\/8.13.0) with SMTP id ID/g;
	$b =~ s/\d\d:\d\d:\d\d [+-]\d{4}/TIME/g;
	return $b;
    },
    # BODY=8BITMIME: the backend Postfix finds the 8bit report SpamAssassin
    # put in the body and says so to the sink; behind Postfix the milter
    # changes the body after cleanup looked at it.
    mail => sub { ($_[0] // '') =~ s/ BODY=8BITMIME//r });

# --- clean, GTUBE (rejected at 15), a tagged message (the report replaces the body)
my @one = $mc->compare('verdicts', 'clean', 'gtube', 'tagme');
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'clean: 250');
like($one[0]{m} ? $one[0]{m}{message} : '', qr/^X-Spam-Status: No, /m, 'clean: X-Spam-Status: No');
like($one[1]{raw_reply}{raw} // '', qr/^5\d\d /, 'GTUBE: refused');
like($one[2]{m} ? $one[2]{m}{message} : '', qr/^X-Spam-Flag: YES$/m, 'tagged: X-Spam-Flag: YES');

# --- a 700 KB body, forged X-Spam-* headers the milter removes
$mc->compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
$mc->compare('forged', ['clean forged', headers => "X-Spam-Status: No, forged\r\nX-Spam-Flag: NO\r\n"]);

# --- a mixed session
$mc->compare('mixed', 'gtube', 'clean', 'tagme', 'gtube', 'clean');

# --- 20 messages in one session
{
	my @msgs = map { [$mc->message('clean twenty')] } 1 .. 20;
	my $r = $mc->session($p->port, @msgs);
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
	$mc->dropped_clients([$mc->message('clean after drops')]);
	ok(proc_alive($mpid), 'spamass-milter is still running');
}

# --- spamd stopped, then the milter stopped: as Postfix
{
	SmtpChainTest::stop_pid($spid, 'TERM', 20);
	$mc->compare('spamd stopped', 'clean');
	SmtpChainTest::stop_pid($mpid, 'TERM', 20);
	$mc->milter_stopped('spamass-milter', 'sender@client.test');
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
