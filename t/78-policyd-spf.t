# 78-policyd-spf.t - the policy module with postfix-policyd-spf-python and
# a DNS server of the test's own (t/lib/SmtpChainTest/DNS.pm; policyd-spf
# runs in a mount namespace whose /etc/resolv.conf names only it): SPF pass
# and softfail get their Received-SPF header (the server's PREPEND), fail
# is refused with 550 and the server's text; a private Postfix with
# check_policy_service in front of the same server gives the same replies
# and headers.
#
# policyd-spf reads requests on its standard input, as Postfix's spawn(8)
# runs it: here a small TCP listener forks one per connection, for the
# proxy and Postfix alike.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/policy/.libs/policy.so";
plan skip_all => "$module is not built" unless -f $module;
plan skip_all => 'needs root (a mount namespace, Postfix)' unless $> == 0;
my $spf = SmtpChainTest::find_program('policyd-spf')
    or plan skip_all => 'policyd-spf is not installed (contrib/deps.sh installs postfix-policyd-spf-python)';
eval { require Net::DNS::Nameserver; 1 }
    or plan skip_all => 'Net::DNS::Nameserver is needed (apt-get install libnet-dns-perl)';
plan skip_all => 'unshare is needed (util-linux)' unless SmtpChainTest::find_program('unshare');
require SmtpChainTest::DNS;

my $dir = tmpdir();
# An address of this run's own: port 53 on one address is shared by every
# process that binds it (SO_REUSEADDR), and other trees' test runs may be
# running this test at the same time on this machine.
my $dnsaddr = sprintf('127.78.%d.%d', ($$ >> 8) & 255, $$ % 253 + 1);
my $dns = SmtpChainTest::DNS->start(addr => $dnsaddr, records => {
	'pass.test' => [ [TXT => 'v=spf1 ip4:127.0.0.0/8 -all'] ],
	'fail.test' => [ [TXT => 'v=spf1 ip4:192.0.2.1 -all'] ],
	'soft.test' => [ [TXT => 'v=spf1 ip4:192.0.2.1 ~all'] ],
});

# policyd-spf's configuration: the Debian defaults, but loopback is checked
# (the test's clients are on it) and the result is acted on.
my $conf = spew("$dir/policyd-spf.conf", "debugLevel = 1\nTestOnly = 1\n" .
    "HELO_reject = Fail\nMail_From_reject = Fail\nPermError_reject = False\n" .
    "TempError_Defer = False\nskip_addresses = 192.0.2.255/32\n");

# One policyd-spf per connection, inside the DNS namespace.
my $spawner = spew("$dir/spawner.pl", <<'EOF');
use strict;
use IO::Socket::INET;
my ($port, @cmd) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 16, ReuseAddr => 1)
    or die "127.0.0.1:$port: $!\n";
$SIG{CHLD} = 'IGNORE';
while (1) {
	my $c = $srv->accept or next;
	my $pid = fork;
	if (defined $pid && $pid == 0) {
		close $srv;
		open(STDIN, '<&', $c) or die;
		open(STDOUT, '>&', $c) or die;
		exec(@cmd) or die "$cmd[0]: $!\n";
	}
	close $c;
}
EOF
my $spfport = free_port();
my $spid = SmtpChainTest::spawn(argv => [$dns->wrap('perl', $spawner, $spfport, $spf, $conf)],
    output => "$dir/policyd-spf.log");
SmtpChainTest::on_cleanup('policyd-spf spawner', sub { SmtpChainTest::stop_pid($spid, 'TERM', 10) });
wait_until(sub { SmtpChainTest::port_listening($spfport) || !proc_alive($spid) }, 30);
die "the policyd-spf listener did not come up:\n" . (slurp("$dir/policyd-spf.log") // '') . "\n"
    unless SmtpChainTest::port_listening($spfport);

my $sink = start_sink();
my $proxy = start_proxy(qq{backend = "127.0.0.1:} . $sink->port . qq{";\nworkers = 1;\n} .
    qq{log { level = "debug"; }\n} .
    qq{filter { module = "$module"; server = "inet:127.0.0.1:$spfport"; timeout = 30; }\n},
    name => 'proxy');
my $postfix = start_postfix(name => 'pf', relay_port => $sink->port,
    main => "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:$spfport, " .
    "permit_mynetworks, reject\n");

my $seq = 0;

# One message from sender@DOMAIN; the RCPT reply, the end reply, the tag.
sub attempt {
	my ($port, $domain, $rcpt) = @_;
	my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	my $tag = sprintf('s%d-%d', $$, ++$seq);
	my $r = $c->send_mail(from => "sender\@$domain", to => [$rcpt],
	    data => "Subject: $tag\r\nMessage-ID: <$tag\@client.test>\r\n\r\nHello.\r\n");
	$c->quit;
	return ($r->{rcpt}[0], $r->{end}, $tag);
}

# Received-SPF of a relayed message, with what differs from run to run
# (receiver, recipient's local part) made neutral.
sub received_spf {
	my ($m, $local) = @_;
	my ($h) = ($m ? $m->{message} : '') =~ /^(Received-SPF:.*(?:\n[ \t].*)*)/m;
	return undef unless defined $h;
	$h =~ s/\n[ \t]+/ /g;
	$h =~ s/\Q$local\E/RCPT/g;
	return $h;
}

my %seen;
for my $sys (['proxy', $proxy->port], ['postfix', $postfix->port]) {
	my ($name, $port) = @$sys;
	my $local = "$name-$$";
	my $rcpt = "$local\@example.test";
	my %got;

	my ($r, $end, $tag) = attempt($port, 'pass.test', $rcpt);
	reply_ok($r, 250, undef, "$name: SPF pass: accepted");
	my ($m) = $sink->wait_find(qr/\Q$tag\E/, 30);
	$got{pass} = received_spf($m, $local);
	like($got{pass} // '', qr/^Received-SPF: Pass \(mailfrom\) identity=mailfrom; client-ip=127\.0\.0\.1;/,
	    "$name: SPF pass: Received-SPF: Pass prepended");

	($r, $end, $tag) = attempt($port, 'soft.test', $rcpt);
	reply_ok($r, 250, undef, "$name: SPF softfail: accepted");
	($m) = $sink->wait_find(qr/\Q$tag\E/, 30);
	$got{soft} = received_spf($m, $local);
	like($got{soft} // '', qr/^Received-SPF: Softfail \(mailfrom\) identity=mailfrom;/,
	    "$name: SPF softfail: Received-SPF: Softfail prepended");

	($r, $end, $tag) = attempt($port, 'fail.test', $rcpt);
	reply_ok($r, 550, '5.7.23', "$name: SPF fail: 550 5.7.23");
	like($r->{text} // '', qr/Recipient address rejected: Message rejected due to: SPF fail - not authorized/,
	    "$name: SPF fail: with the server's text");
	ok(!$sink->wait_find(qr/\Q$tag\E/, 2), "$name: SPF fail: not relayed");
	($got{fail} = $r->{raw} // '') =~ s/\Q$local\E/RCPT/g;
	$seen{$name} = \%got;
}
is_deeply($seen{proxy}, $seen{postfix}, 'the proxy and Postfix give the same replies and headers')
    or diag explain \%seen;
ok(scalar(grep { /^pass\.test TXT$/ } $dns->queries), 'policyd-spf asked the test\'s DNS server');

$proxy->stop_ok;
done_testing();
