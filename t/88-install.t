# 88-install.t - make install DESTDIR=...: the daemon, the shipped modules,
# the header and pkg-config file, the man pages (8, 5 and 3), the sample
# config and the systemd unit land where the configured directories say
# (with ./configure --prefix=/usr --sysconfdir=/etc --localstatedir=/var:
# where Debian expects them), and the installed daemon checks the
# installed sample config.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR};
plan skip_all => 'no build directory with a Makefile' unless $build && -f "$build/Makefile";

# A make of our own, not a sub-make of "make check" (no inherited flags:
# they would add "Entering directory" lines and a jobserver we lack).
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};

# The directory variables as make expands them.
my %dir;
for my $v (qw(prefix sbindir mandir sysconfdir pkglibdir includedir libdir systemdsystemunitdir)) {
	my $val = `make -s --no-print-directory -C '$build' -f Makefile -f - print-$v 2>/dev/null <<'EOF'
print-%:
	\@echo \$(\$*)
EOF
`;
	chomp $val;
	$dir{$v} = $val;
}
ok($dir{sbindir} && $dir{mandir}, "directories from the Makefile (prefix $dir{prefix})");

my $dest = tmpdir() . '/dest';
my $out = `make -C '$build' install DESTDIR='$dest' 2>&1`;
is($?, 0, 'make install DESTDIR=... succeeds') or diag($out);

ok(-x "$dest$dir{sbindir}/smtpchain", "the daemon: $dir{sbindir}/smtpchain");
ok(-f "$dest$dir{mandir}/man8/smtpchain.8", 'smtpchain(8)');
ok(-f "$dest$dir{mandir}/man5/smtpchain.conf.5", 'smtpchain.conf(5)');
ok(-f "$dest$dir{mandir}/man3/smtpchain-filter.3", 'smtpchain-filter(3)');
ok(-f "$dest$dir{sysconfdir}/smtpchain/smtpchain.conf", "the sample config in $dir{sysconfdir}/smtpchain");
ok(-f "$dest$dir{includedir}/smtpchain/filter.h", 'the module ABI header');
ok(-f "$dest$dir{libdir}/pkgconfig/smtpchain.pc", 'smtpchain.pc');
for my $m (qw(regex headers milter)) {
	ok(-f "$dest$dir{pkglibdir}/$m.so", "module $m.so in $dir{pkglibdir}");
}
SKIP: {
	skip 'configured without a systemd unit directory', 4 unless $dir{systemdsystemunitdir};
	my $unit = "$dest$dir{systemdsystemunitdir}/smtpchain.service";
	ok(-f $unit, "the unit in $dir{systemdsystemunitdir}");
	my $u = slurp($unit) // '';
	like($u, qr/^Type=notify$/m, 'Type=notify');
	like($u, qr/^ExecStart=\Q$dir{sbindir}\E\/smtpchain -c \Q$dir{sysconfdir}\E\/smtpchain\/smtpchain\.conf$/m,
	    'ExecStart with the installed paths');
	like($u, qr/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m, 'ExecReload sends SIGHUP');
}
is(system("'$dest$dir{sbindir}/smtpchain' -V >/dev/null"), 0, 'the installed daemon runs');
# The installed sample config, checked by the installed daemon (its
# listen/backend addresses are never bound by -t).
my $conf = "$dest$dir{sysconfdir}/smtpchain/smtpchain.conf";
my $t = `'$dest$dir{sbindir}/smtpchain' -t -c '$conf' 2>&1`;
is($?, 0, 'smtpchain -t accepts the installed sample config') or diag($t);

done_testing;
