# 84-systemd-unit.t - the built systemd unit (contrib/smtpchain.service) is
# sandboxed: systemd-analyze security --offline=true rates its exposure at
# 2.0 or below (issue 13; the unit's comments say what each line is for).
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

my $build = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $analyze = SmtpChainTest::find_program('systemd-analyze')
    or plan skip_all => 'systemd-analyze is not installed (apt-get install systemd)';
my $unit = "$build/contrib/smtpchain.service";
# Built by make unless configured --with-systemdsystemunitdir=no: make it then.
system('make', '-s', '-C', $build, 'contrib/smtpchain.service') unless -f $unit;
plan skip_all => "$unit could not be built" unless -f $unit;

my $out = `'$analyze' security --offline=true --no-pager '$unit' 2>&1`;
my ($level) = $out =~ /Overall exposure level for \S+:\s*([0-9.]+)/;
ok(defined $level, 'systemd-analyze rates the unit') or diag($out);
cmp_ok($level // 10, '<=', 2.0, "exposure $level is 2.0 or below") or diag($out);
like(slurp($unit) // '', qr/^NoNewPrivileges=yes$/m, 'NoNewPrivileges=yes');
like(slurp($unit) // '', qr/^ProtectSystem=strict$/m, 'ProtectSystem=strict');
unlike(slurp($unit) // '', qr/^ReadWritePaths=.*(?:^|\s)-?\/(?:\s|$)/m, 'ReadWritePaths is not /');

done_testing();
