# 95-fuzz.t - every fuzz harness in t/fuzz/, bounded, as part of make check.
#
# Each harness t/fuzz/fuzz_NAME in the build tree is run on its seed corpus
# t/fuzz/seed/fuzz_NAME:
#  - built with libFuzzer (./configure --enable-fuzzing CC=clang): a real
#    fuzzing run of SMTPCHAIN_FUZZ_SECONDS seconds (default 10), on a scratch
#    copy of the corpus, with crash/leak/timeout artifacts kept in t/tmp/;
#  - built without it (t/fuzz/standalone.c): every seed file replayed once,
#    a regression check of the inputs we have (under ASan in the sanitizer
#    build).
# A harness that aborts, crashes, leaks or hangs fails here.  Longer runs:
# "make fuzz FUZZ_SECONDS=3600" (README).
use strict;
use warnings;

use Test::More;
use File::Path qw(make_path);
use SmtpChainTest;

my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set (run through make check)';
my $src = SmtpChainTest::srcdir();
my $secs = $ENV{SMTPCHAIN_FUZZ_SECONDS} || 10;

opendir(my $dh, "$src/t/fuzz/seed") or plan skip_all => "no seed corpora in $src/t/fuzz/seed";
my @names = sort grep { /^fuzz_\w+\z/ && -d "$src/t/fuzz/seed/$_" } readdir $dh;
closedir $dh;
plan skip_all => 'no seed corpora' unless @names;

my $dir = tmpdir();
for my $name (@names) {
	my $bin = "$build/t/fuzz/$name";
	my $seed = "$src/t/fuzz/seed/$name";
	opendir(my $sd, $seed) or die "$seed: $!\n";
	my $nseeds = grep { !/^\./ && -f "$seed/$_" } readdir $sd;
	closedir $sd;
	SKIP: {
		skip("$name is not built (make check builds it)", 1) unless -x $bin;
		my $libfuzzer = index(slurp($bin) // '', 'max_total_time') >= 0;
		my $log = "$dir/$name.log";
		my @argv;
		if ($libfuzzer) {
			my $corpus = "$dir/corpus-$name";
			make_path($corpus, "$dir/artifacts-$name");
			@argv = ($bin, "-max_total_time=$secs", '-timeout=10', '-rss_limit_mb=2048',
			    "-artifact_prefix=$dir/artifacts-$name/", '-print_final_stats=1',
			    $corpus, $seed);
		} else {
			@argv = ($bin, $seed);
		}
		# timeout(1) bounds a harness that hangs in spite of -timeout.
		my $limit = $libfuzzer ? $secs + 120 : 120;
		my $pid = fork() // die "fork: $!\n";
		if ($pid == 0) {
			open(STDIN, '<', '/dev/null');
			open(STDOUT, '>', $log) or POSIX::_exit(126);
			open(STDERR, '>&', \*STDOUT);
			exec('timeout', '-k', '5', $limit, @argv) or POSIX::_exit(127);
		}
		waitpid($pid, 0);
		my $st = $?;
		my $out = slurp($log) // '';
		my $what = $libfuzzer ? "fuzzed for ${secs}s" : "replayed $nseeds seed files";
		my $ok = $st == 0;
		if ($ok && !$libfuzzer) {
			my $oks = () = $out =~ /^ok \d+ /mg;
			$ok = $oks == $nseeds && $out !~ /^not ok/m;
		}
		ok($ok, "$name: $what") or do {
			my @l = split /\n/, $out;
			@l = @l[-40 .. -1] if @l > 40;
			diag(sprintf("exit status 0x%x; last lines of %s:\n", $st, $log) .
			    join('', map { "#   $_\n" } @l));
		};
		if ($libfuzzer && $out =~ /stat::number_of_executed_units:\s*(\d+)/) {
			note("$name: $1 runs in ${secs}s");
		}
	}
}
done_testing();
