# 88-install.t - make install DESTDIR=...: the daemon, the shipped modules,
# the header and pkg-config file, the man pages (8, 5 and 3), the sample
# config and the systemd unit land where the configured directories say
# (with ./configure --prefix=/usr --sysconfdir=/etc --localstatedir=/var:
# where Debian expects them), and the installed daemon checks the
# installed sample config.  Then filters/example is built out of tree with
# its own Makefile against the installed header and smtpchain.pc, installed
# by its make install, and run by the installed daemon on a message.
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

# --- filters/example, built out of tree with its own Makefile against the
# installed <smtpchain/filter.h> and smtpchain.pc (pkg-config looks only in
# DESTDIR, whose paths it prefixes with PKG_CONFIG_SYSROOT_DIR), installed
# by its `make install` into the module directory, and run by the installed
# daemon: it refuses recipients in its domain and appends its header.
SKIP: {
	my $src = $ENV{SMTPCHAIN_SRCDIR} || SmtpChainTest::srcdir();
	skip 'no filters/example in the source tree', 10 unless -f "$src/filters/example/Makefile";
	skip 'no pkg-config', 10 unless SmtpChainTest::find_program('pkg-config');
	skip 'no smtp-sink (Postfix) for the backend', 10 unless SmtpChainTest::find_program('smtp-sink');
	my $ex = tmpdir() . '/example';
	mkdir $ex or die "mkdir $ex: $!\n";
	for my $f (qw(Makefile example.c)) {
		spew("$ex/$f", slurp("$src/filters/example/$f") // die "read $src/filters/example/$f\n");
	}
	local $ENV{PKG_CONFIG_LIBDIR} = "$dest$dir{libdir}/pkgconfig";
	local $ENV{PKG_CONFIG_PATH} = '';
	local $ENV{PKG_CONFIG_SYSROOT_DIR} = $dest;
	local $ENV{PKG_CONFIG_ALLOW_SYSTEM_CFLAGS} = 1;	# -I$dest/usr/include is not the system's
	my $mk = `make -C '$ex' CFLAGS='-O2 -g -Wall -Wextra -Werror' 2>&1`;
	is($?, 0, 'filters/example builds with its Makefile against the installed header and smtpchain.pc')
	    or diag($mk);
	like($mk, qr/-I\Q$dest$dir{includedir}\E\b/, 'with the installed include directory') or diag($mk);
	$mk = `make -C '$ex' install 2>&1`;
	is($?, 0, 'and its make install succeeds') or diag($mk);
	ok(-f "$dest$dir{pkglibdir}/example.so", "example.so installed in $dir{pkglibdir} (pkg-config's moduledir)");

	my $sink = start_sink(name => 'example-sink');
	my $bport = $sink->port;
	local $ENV{SMTPCHAIN} = "$dest$dir{sbindir}/smtpchain";
	my $p = start_proxy(<<"EOF", name => 'example');
backend = "127.0.0.1:$bport";
module_path = "$dest$dir{pkglibdir}";
log { level = "info"; }
filter {
    module = "example";
    domain = "example.invalid";
}
EOF
	my $c = smtp_connect($p->port) or die "connect: $@\n";
	$c->read_reply;
	$c->ehlo('client.test');
	my $id = "example-$$";
	my $msg = make_message(id => $id, subject => 'through the example module');
	my $r = $c->send_mail(from => 'sender@client.test', to => ['someone@example.invalid', 'rcpt@example.test'],
	    data => $msg);
	is($r->{rcpt}[0] && $r->{rcpt}[0]{raw}, "550 5.7.1 Recipients in this domain are not accepted here\r\n",
	    'example: a recipient in its domain is refused with its reply');
	reply_ok($r->{end}, 250, '2.0.0', 'example: the message to the other recipient is accepted');
	$c->quit;
	my ($m) = $sink->wait_find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m);
	is_deeply($m && $m->{rcpt}, ['<rcpt@example.test>'], 'example: the backend gets the other recipient only');
	(my $want = $msg) =~ s/\r\n\r\n/\r\nX-Example: checked\r\n\r\n/;
	is($m && $m->{message}, to_lf($want), 'example: its default header appended after the others')
	    or diag($m && $m->{message});
	$p->stop_ok('the installed daemon with the example module exits 0');
}

done_testing;
