# 96-bench-smoke.t - the benchmark (bench/run.sh --quick) runs end to end
# with tiny counts: it writes its CSV files, and every message it sent
# through every system arrived at the sink.  No number is judged here (the
# machine is shared; timings mean nothing in a test): only that the bench
# works.  Haraka is included only with BENCH_SMOKE_HARAKA=1 and when the
# bench already installed it in its cache (the test never runs npm); any
# system the bench skips (no OpenDKIM...) must say why.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $src = SmtpChainTest::srcdir();
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
plan skip_all => 'smtp-source is not installed' unless SmtpChainTest::find_program('smtp-source');
plan skip_all => 'built with AddressSanitizer: the bench measures the daemon, not the sanitizer'
    if SmtpChainTest::sanitized();

my $out = tmpdir() . '/results';
my $cache = $ENV{BENCH_CACHE} || '/var/tmp/smtpchain-bench';
my @systems = qw(direct empty empty-w1 regex nullmilter milter policy);
# Haraka (node) takes seconds to start: only on request, and only when the
# bench already installed it (the test never runs npm).
push @systems, 'haraka', 'haraka-nodelay' if $ENV{BENCH_SMOKE_HARAKA} && -f "$cache/haraka/node_modules/Haraka/bin/haraka";

my %env = (BENCH_SYSTEMS => join(',', @systems), BENCH_RUNS => 1, BENCH_PAR_MSGS => 20,
    BENCH_SEQ_MSGS => 5, BENCH_1M_MSGS => 2, BENCH_TEXT_MSGS => 2, BENCH_IDLE => 50, BENCH_BIG_MB => 1,
    BENCH_NO_INSTALL => 1, BENCH_CACHE => $cache);
my $cmd = join(' ', (map { "$_=$env{$_}" } sort keys %env),
    'timeout', '-k', '5', '300', 'sh', "$src/bench/run.sh", '--quick', '--out', $out);
my $text = `$cmd 2>&1`;
my $rc = $? >> 8;
is($rc, 0, 'bench --quick exits 0 (every message delivered)') or diag($text);

my $csv = slurp("$out/bench.csv");
ok(defined $csv, 'bench.csv written') or BAIL_OUT("no CSV:\n$text");
ok(-s "$out/bench-runs.csv", 'bench-runs.csv written');
my ($head, @lines) = split /\n/, $csv;
my @cols = split /,/, $head;
my @rows = map { my %r; @r{@cols} = split /,/, $_, -1; \%r } @lines;
my %skipped = map { $_ => 1 } $text =~ /^# SKIPPED ([\w-]+):/mg;

for my $sys (@systems) {
	my @mine = grep { $_->{system} eq $sys } @rows;
	if ($skipped{$sys}) {
		ok(!@mine, "$sys: skipped with a reason, no rows") or diag($text);
		next;
	}
	my %wl = map { $_->{workload} => $_ } @mine;
	my @want = qw(par4k seq4k 1mib);
	push @want, 'text' if $sys =~ /^(?:direct|empty|regex)\z/;
	push @want, 'idle' if $sys =~ /^(?:empty|regex|haraka)\z/;
	push @want, 'big' if $sys =~ /^(?:regex|milter)\z/;
	for my $w (@want) {
		my $r = $wl{$w};
		ok($r && $r->{delivered_ok} eq '1', "$sys $w: every message arrived")
		    or diag($r ? join(',', map { "$_=$r->{$_}" } @cols) : "no $w row\n$text");
	}
	for my $w (grep { $_ ne 'idle' } @want) {
		ok($wl{$w} && $wl{$w}{rate_median} =~ /^\d+(?:\.\d+)?\z/, "$sys $w: a rate");
	}
}
# The empty chain's idle sessions were measured (the number is not judged).
my ($idle) = grep { $_->{system} eq 'empty' && $_->{workload} eq 'idle' } @rows;
like($idle ? $idle->{idle_kb} : '', qr/^-?\d+(?:\.\d+)?\z/, 'empty idle: KiB per session measured');
like($text, qr/^system\s+workload\s+msgs/m, 'the table is printed');

done_testing();
