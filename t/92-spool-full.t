# 92-spool-full.t - the spool disk fills up while a message is held.
#
# A filter that needs the body makes the proxy hold each message until the
# filter is done; past limits.spool_memory the body goes to spool_dir.
# Here spool_dir is a 1 MiB tmpfs the test mounts (as root; skipped when
# the mount is not allowed), and a 3 MB message cannot fit: the client must
# get 452/451 (never a 250 for a message that is then lost), the session
# must go on, and a small message must still pass, before and after.  The
# ledger checks nothing was lost or leaked.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;
use SmtpChainFaults;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'mounting a tmpfs needs root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $TF = "$build/t/modules/.libs/testfilter.so";
plan skip_all => "$TF is not built" unless -f $TF;

my $dir = tmpdir();
my $spool = "$dir/spool";
mkdir $spool or die "$spool: $!\n";
my $out = `mount -t tmpfs -o size=1m,mode=1777 smtpchain-test-spool '$spool' 2>&1`;
plan skip_all => "cannot mount a tmpfs on $spool: $out" if $?;
SmtpChainTest::on_cleanup("tmpfs $spool", sub { system('umount', $spool) == 0 or system('umount', '-l', $spool) });

my $b = start_backend(name => 'backend');
my $ledger = ledger(messages => sub { $b->message_texts });
my $p = start_proxy(<<"EOF");
backend = "127.0.0.1:@{[ $b->port ]}";
spool_dir = "$spool";
limits { spool_memory = 4096; max_message_size = 20000000; }
timeout { shutdown = 5; }
filter {
	module = "$TF";
	tag = "body";
	needs = [ "headers", "body" ];
}
EOF

my $small = try_message($p->port, $ledger, prefix => 'small-before');
reply_ok($small->{end}, 250, undef, 'a small message is held and relayed');

my $line = ('x' x 76) . "\r\n";
my $big = $line x int(3_000_000 / length $line);
for my $i (1 .. 3) {
	my $r = try_message($p->port, $ledger, prefix => "big-$i", body => $big, timeout => 60);
	my $end = $r->{end};
	ok($end && $end->{code} && $end->{code} =~ /^45[12]$/, "a 3 MB message with a 1 MiB spool: 452/451 ($i)")
	    or diag(SmtpChainTest::Client::describe($end));
	like($end->{raw} // '', qr/^45[12] 4\.3\.1 /, "  4.3.1: insufficient system storage ($i)");
}
like($p->log_text, qr/spool|No space left|storage/i, 'the daemon logs why');

opendir(my $d, $spool);
my @left = grep { !/^\.\.?\z/ } readdir $d;
closedir $d;
is_deeply(\@left, [], 'nothing is left in the spool directory');
my $df = `df -k '$spool' | tail -1`;
my ($used) = $df =~ /^\S+\s+\d+\s+(\d+)/;
ok(defined $used && $used < 64, "the spool space is free again (${\ ($used // '?')} kB used)") or diag($df);

my $after = try_message($p->port, $ledger, prefix => 'small-after');
reply_ok($after->{end}, 250, undef, 'a small message afterwards is held and relayed');

$ledger->check('spool full', min_accepted => 2);
$p->stop_ok;
done_testing();
