# 99-reconfigure.t - the configured paths follow a reconfigure, and a
# private --prefix keeps make install inside it.
#
# The README's two commands in a row (contrib/demo.sh configures with the
# default prefix, .ci/run then with --prefix=/usr) once left config.o built
# with the first prefix: the paths were -D flags, which make does not track.
# Here a copy of the source tree (make distdir) is configured with one
# prefix and the objects that use the paths built, then configured with
# another and built again: the default config file and module directory in
# them must be the second prefix's.  A third configure with the same paths
# recompiles nothing.  Last, the systemd unit is
# installed under the private prefix (PREFIX/lib/systemd/system by default),
# never into the system's unit directory.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR};
plan skip_all => 'no build directory with a Makefile' unless $build && -f "$build/Makefile";

# A make of our own, not a sub-make of "make check".
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};

my $dir = tmpdir();
my $src = "$dir/src";
my $out = `make -C '$build' distdir distdir='$src' 2>&1`;
is($?, 0, 'make distdir: a copy of the source tree') or diag($out);
ok(-x "$src/configure", 'with its configure');

# Configure the copy for a prefix and compile the objects that use the
# paths (the whole build is not needed: what matters is whether make
# rebuilds them); the output of both on failure.
my @objects = qw(proxy/config.o proxy/main.o);
sub configure_and_make {
	my ($prefix, $what) = @_;
	my $o = `cd '$src' && ./configure -q -C --prefix='$prefix' 2>&1`;
	is($?, 0, "$what: configure --prefix=$prefix") or diag($o);
	$o = `make -C '$src' @objects 2>&1`;
	is($?, 0, "$what: make @objects") or diag($o);
	return $o;
}

# The paths compiled into the objects: the default config file (main.o)
# and module directory (config.o).
sub check_paths {
	my ($prefix, $what) = @_;
	my $main = slurp("$src/proxy/main.o") // '';
	my $config = slurp("$src/proxy/config.o") // '';
	ok(index($main, "$prefix/etc/smtpchain/smtpchain.conf") >= 0,
	    "$what: the default config file is $prefix/etc/smtpchain/smtpchain.conf");
	ok(index($config, "$prefix/lib/smtpchain") >= 0, "$what: the default module_path is $prefix/lib/smtpchain");
}

my ($p1, $p2) = ("$dir/first", "$dir/second");
configure_and_make($p1, 'first');
check_paths($p1, 'first');
configure_and_make($p2, 'second');
check_paths($p2, 'second');
is(index((slurp("$src/proxy/main.o") // '') . (slurp("$src/proxy/config.o") // ''), "$p1/"), -1,
    'nothing of the first prefix is left in them');

# The same paths again: the header is not rewritten, nothing recompiled.
my $o = configure_and_make($p2, 'same again');
unlike($o, qr/\b(?:CC|gcc|cc)\b/, 'an unchanged reconfigure recompiles nothing') or diag($o);

# make install's unit directory: under the prefix unless configured.
my $unitdir = `make -s --no-print-directory -C '$src' -f Makefile -f - print-unitdir 2>/dev/null <<'MK'
print-unitdir:
	\@echo \$(systemdsystemunitdir)
MK
`;
chomp $unitdir;
is($unitdir, "$p2/lib/systemd/system", 'the systemd unit directory defaults to PREFIX/lib/systemd/system');
$o = `make -C '$src' install-systemdsystemunitDATA 2>&1`;
is($?, 0, 'installing the unit succeeds') or diag($o);
ok(-f "$p2/lib/systemd/system/smtpchain.service", 'the unit is under the private prefix');
unlike($o, qr{ /(?:usr/)?lib/systemd/system}, 'and nothing is written to the system\'s unit directory') or diag($o);

# make distdir leaves directories read-only: let the cleanup remove them.
system('chmod', '-R', 'u+w', $dir);

done_testing;
