# 05-test-dns.t - the tests' DNS server (t/lib/SmtpChainTest/DNS.pm): the
# records it is given, NXDOMAIN for other names, a command wrapped by it
# resolves through it and only it, and the machine's /etc/resolv.conf is
# left as it was.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'needs root (a mount namespace)' if $> != 0;
eval { require Net::DNS::Nameserver; 1 }
    or plan skip_all => 'Net::DNS::Nameserver is needed (apt-get install libnet-dns-perl)';
plan skip_all => 'unshare is needed (util-linux)' unless SmtpChainTest::find_program('unshare');
require SmtpChainTest::DNS;

my $before = slurp('/etc/resolv.conf');
my $dns = SmtpChainTest::DNS->start(records => {
	'Example.TEST' => [ [A => '127.0.0.7'], [MX => '10 mx.example.test'] ],
	'_dmarc.example.test' => [ [TXT => 'v=DMARC1; p=reject'] ],
});

# Run a command through the wrapper; its stdout.
sub run_wrapped {
	my @cmd = $dns->wrap(@_);
	open(my $fh, '-|', @cmd) or die "$cmd[0]: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return $out;
}

like(run_wrapped('getent', 'ahostsv4', 'example.test'), qr/^127\.0\.0\.7\s/m,
    'the C library resolves an A record through it');
is(run_wrapped('perl', '-MNet::DNS', '-e',
    'print join(",", map { $_->txtdata } rr("_dmarc.example.test", "TXT"))'),
    'v=DMARC1; p=reject', 'a TXT record, as given');
is(run_wrapped('perl', '-MNet::DNS', '-e',
    'print join(",", map { $_->exchange } rr("example.test", "MX"))'),
    'mx.example.test', 'an MX record');
is(run_wrapped('perl', '-MNet::DNS', '-e',
    'my $p = Net::DNS::Resolver->new->send("nothing.example.test", "A"); print $p->header->rcode'),
    'NXDOMAIN', 'NXDOMAIN for a name it does not have');
is(run_wrapped('cat', '/etc/resolv.conf'), "nameserver " . $dns->addr . "\noptions timeout:2 attempts:2\n",
    'the wrapped command sees a resolv.conf naming only this server');
is(slurp('/etc/resolv.conf'), $before, 'the machine\'s /etc/resolv.conf is unchanged');
my @q = $dns->queries;
ok((grep { $_ eq '_dmarc.example.test TXT' } @q), 'the queries are logged') or diag "@q";
my $pid = $dns->pid;
$dns->stop;
ok(!proc_alive($pid), "stopped");
done_testing;
