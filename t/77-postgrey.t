# 77-postgrey.t - the policy module with postgrey (Debian's package, its own
# database directory here, a delay of a few seconds): the first attempt is
# deferred with postgrey's text, a retry after the delay is accepted and
# relayed (with postgrey's X-Greylist header), a whitelisted client passes
# at once; and a private Postfix with check_policy_service in front of the
# same postgrey gives the same replies.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/policy/.libs/policy.so";
plan skip_all => "$module is not built" unless -f $module;
my $postgrey = SmtpChainTest::find_program('postgrey')
    or plan skip_all => 'postgrey is not installed (contrib/deps.sh installs it)';
plan skip_all => 'needs root (postgrey drops to its user, Postfix runs as postfix)' unless $> == 0;
my ($pguid, $pggid) = (getpwnam('postgrey'))[2, 3];
plan skip_all => 'no postgrey user' unless defined $pguid;

my $dir = tmpdir();
my $delay = 3;

# postgrey on a port of its own, with its own database and whitelists.
my $pgport = free_port();
my $db = "$dir/postgrey-db";
mkdir $db;
chown $pguid, $pggid, $db;
chmod 0755, $dir;
spew("$dir/whitelist_clients", "127.0.0.2\n");
spew("$dir/whitelist_recipients", "postmaster\@\n");
my $pgpid = SmtpChainTest::spawn(argv => [$postgrey, "--inet=127.0.0.1:$pgport", "--dbdir=$db",
    "--delay=$delay", '--auto-whitelist-clients=0', '--hostname=postgrey.test',
    "--whitelist-clients=$dir/whitelist_clients",
    "--whitelist-recipients=$dir/whitelist_recipients"], output => "$dir/postgrey.log");
SmtpChainTest::on_cleanup('postgrey', sub { SmtpChainTest::stop_pid($pgpid, 'TERM', 10) });
wait_until(sub { SmtpChainTest::port_listening($pgport) || !proc_alive($pgpid) }, 30);
die "postgrey did not come up:\n" . (slurp("$dir/postgrey.log") // '') . "\n"
    unless SmtpChainTest::port_listening($pgport);

my $sink = start_sink();
my $proxy = start_proxy(qq{backend = "127.0.0.1:} . $sink->port . qq{";\nworkers = 1;\n} .
    qq{log { level = "debug"; }\n} .
    qq{filter { module = "$module"; server = "inet:127.0.0.1:$pgport"; }\n}, name => 'proxy');
my $postfix = start_postfix(name => 'pf', relay_port => $sink->port,
    main => "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:$pgport, " .
    "permit_mynetworks, reject\n");

my $seq = 0;

# One attempt from a client address: the RCPT reply, and the message's tag
# when it was accepted.
sub attempt {
	my ($port, $rcpt, %o) = @_;
	my $c = smtp_connect($port, timeout => 30, local_addr => $o{from_addr} // '127.0.0.1')
	    or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	my $tag = sprintf('g%d-%d', $$, ++$seq);
	my $r = $c->send_mail(from => 'sender@client.test', to => [$rcpt],
	    data => "Subject: $tag\r\nMessage-ID: <$tag\@client.test>\r\n\r\nHello.\r\n");
	$c->quit;
	return ($r->{rcpt}[0], $tag, $r->{end});
}

# The reply text with the recipient's local part made neutral, to compare.
sub neutral {
	my ($r, $local) = @_;
	my $t = $r && $r->{raw} // '';
	$t =~ s/\Q$local\E/RCPT/g;
	return $t;
}

my %seen;
for my $sys (['proxy', $proxy->port], ['postfix', $postfix->port]) {
	my ($name, $port) = @$sys;
	my $local = "$name-$$";
	my $rcpt = "$local\@example.test";
	my $t0 = time;
	my ($r1) = attempt($port, $rcpt);
	reply_ok($r1, 450, undef, "$name: the first attempt is deferred");
	like($r1->{text} // '', qr/Greylisted, see http:\/\/postgrey/, "$name: with postgrey's text");
	my ($r2) = attempt($port, $rcpt);
	reply_ok($r2, 450, undef, "$name: an early retry is deferred too");
	# The greylisting delay itself is a real wait (postgrey counts seconds).
	my $left = $t0 + $delay + 1.5 - time;
	sleep($left) if $left > 0;
	my ($r3, $tag, $end) = attempt($port, $rcpt);
	reply_ok($r3, 250, undef, "$name: accepted after the delay");
	reply_ok($end, 250, undef, "$name: the message is accepted");
	my @m = $sink->wait_find(qr/\Q$tag\E/, 30);
	is(scalar(@m), 1, "$name: relayed once");
	like($m[0] ? $m[0]{message} : '', qr/^X-Greylist: delayed \d+ seconds by postgrey/m,
	    "$name: with postgrey's X-Greylist header (its PREPEND)");
	my ($w, $wtag) = attempt($port, "white-$local\@example.test", from_addr => '127.0.0.2');
	reply_ok($w, 250, undef, "$name: a whitelisted client passes at once");
	ok(scalar($sink->wait_find(qr/\Q$wtag\E/, 30)), "$name: and is relayed");
	my ($pm) = attempt($port, 'postmaster@example.test');
	reply_ok($pm, 250, undef, "$name: a whitelisted recipient passes at once");
	$seen{$name} = [neutral($r1, $local), neutral($r2, $local), $r3->{code}, $w->{code}, $pm->{code}];
}
is_deeply($seen{proxy}, $seen{postfix}, 'the proxy and Postfix give the same replies')
    or diag explain \%seen;

$proxy->stop_ok;
done_testing();
