# 89-privsep.t - running unprivileged: the master starts as root, binds
# and reads what only root may read; every worker and the metrics server
# give up root for good before their first accept (`user`, its one group, no
# capabilities, no_new_privs), after a reload too.  A module's init() reads
# a root-only file, its hooks cannot write it (EACCES) and the session goes
# on; mail flows through regex, headers and a milter (OpenDKIM on a unix
# socket the user reaches through the socket's group); quarantine files are
# the user's, 0600; the start-up checks (root without `user`, a user that
# does not exist, directories the user does not own) and `chroot`.
#
# Needs root (it is what is tested) and the account "smtpchain", which
# contrib/deps.sh creates; made here too if it is missing.
use strict;
use warnings;

use File::Path qw(make_path);
use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'the drop of privileges needs a start as root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my %mod = map { $_ => "$build/filters/$_/.libs/$_.so" } qw(regex headers milter);
$mod{test} = "$build/t/modules/.libs/testfilter.so";
for (values %mod) { plan skip_all => "$_ is not built (make check builds it)" unless -f $_ }

my $USER = 'smtpchain';
unless (defined getpwnam($USER)) {
	system('useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent',
	    '--shell', '/usr/sbin/nologin', $USER) == 0 || defined getpwnam($USER)
	    or plan skip_all => "no user $USER and useradd failed";
}
my (undef, undef, $uid, $gid) = getpwnam($USER);

my $dir = tmpdir();
my $bin = $ENV{SMTPCHAIN};

# Run the daemon to its end (-t, or a start that must fail); (exit code, stderr).
sub run {
	my (@args) = @_;
	my $err = "$dir/run.err";
	unlink($err);
	my $pid = SmtpChainTest::spawn(argv => [$bin, @args], output => $err);
	waitpid($pid, 0);
	return ($? >> 8, slurp($err) // '');
}

# A directory of the user's own, mode 0700.
sub user_dir {
	my ($path) = @_;
	make_path($path);
	chown($uid, $gid, $path) or die "chown $path: $!\n";
	chmod(0700, $path) or die "chmod $path: $!\n";
	return $path;
}

# /proc/PID/status as a hash of its fields.
sub status {
	my ($pid) = @_;
	my %s;
	for (split /\n/, slurp("/proc/$pid/status") // '') {
		$s{$1} = $2 if /^(\w+):\s*(.*?)\s*$/;
	}
	return \%s;
}

# Every privilege of a process we dropped: the user's ids, no capability,
# no_new_privs, no group but the user's.  A worker loads its modules first
# (slow under valgrind): wait until no_new_privs, the last step, is set.
sub dropped_ok {
	my ($pid, $what) = @_;
	wait_until(sub { (status($pid)->{NoNewPrivs} // '') eq '1' || !proc_alive($pid) }, 60);
	my $s = status($pid);
	is($s->{Uid}, join("\t", ($uid) x 4), "$what: Uid is ${USER}'s ($uid), real, effective, saved, fs");
	is($s->{Gid}, join("\t", ($gid) x 4), "$what: Gid is ${USER}'s group ($gid)");
	is($s->{CapEff}, '0000000000000000', "$what: CapEff 0");
	is($s->{CapPrm}, '0000000000000000', "$what: CapPrm 0");
	is($s->{NoNewPrivs}, '1', "$what: NoNewPrivs 1");
	ok(($s->{Groups} // '') eq '' || $s->{Groups} eq $gid, "$what: no supplementary group")
	    or diag("Groups: $s->{Groups}");
}

# --- refused at start: root without user; -t: a user that does not exist
my $sink = start_sink();
my $sport = $sink->port;
{
	my $port = free_port();
	my $conf = spew("$dir/nouser.conf", qq{listen = "127.0.0.1:$port";\nbackend = "127.0.0.1:$sport";\n});
	my ($code, $err) = run('-c', $conf);
	is($code, 1, 'started as root without "user": exits 1');
	like($err, qr/^\Q$conf\E: started as root without "user".*user = "smtpchain";.*user = "root";/m,
	    'with a message naming the key, and user = "root" to insist') or diag($err);
	ok(!SmtpChainTest::port_listening($port), 'and nothing listens');

	$conf = spew("$dir/nosuch.conf", qq{listen = "127.0.0.1:$port";\nbackend = "127.0.0.1:$sport";\n} .
	    qq{user = "no-such-user-$$";\n});
	($code, $err) = run('-t', '-c', $conf);
	is($code, 1, '-t with a user that does not exist: exits 1');
	like($err, qr/^\Q$conf\E:3: user: no such user "no-such-user-$$"/m, 'naming the key and the line')
	    or diag($err);

	my $ww = "$dir/world-writable";
	make_path($ww);
	chown($uid, $gid, $ww);
	chmod(0777, $ww);
	$conf = spew("$dir/baddir.conf", qq{listen = "127.0.0.1:$port";\nbackend = "127.0.0.1:$sport";\n} .
	    qq{user = "$USER";\nquarantine_dir = "$ww";\nspool_dir = "$ww";\n});
	($code, $err) = run('-c', $conf);
	is($code, 1, 'a world-writable quarantine_dir: refused at start');
	like($err, qr/quarantine_dir \Q$ww\E: mode 0777 is group- or world-writable/, 'saying why')
	    or diag($err);
	chown(0, 0, $ww);
	chmod(0700, $ww);
	($code, $err) = run('-c', $conf);
	is($code, 1, 'a quarantine_dir root owns: refused at start');
	like($err, qr/quarantine_dir \Q$ww\E: owned by uid 0, not by user "\Q$USER\E"/, 'saying why')
	    or diag($err);
}

# --- OpenDKIM on a unix socket: its socket's group is the user's group
my $opendkim = SmtpChainTest::find_program('opendkim');
my $genkey = SmtpChainTest::find_program('opendkim-genkey');
my $dkim;
if ($opendkim && $genkey && defined getpwnam('opendkim')) {
	my $kdir = "$dir/dkim";
	make_path($kdir);
	system($genkey, '-D', $kdir, '-d', 'example.test', '-s', 'test', '-b', '1024') == 0
	    or BAIL_OUT('opendkim-genkey failed');
	my $odu = getpwnam('opendkim');
	chown($odu, -1, "$kdir/test.private");
	# The socket's directory: OpenDKIM creates the socket there as
	# opendkim:smtpchain, mode 0660 (UMask 007): what smtpchain.conf(5) says.
	my $sdir = "$dir/dkim-run";
	make_path($sdir);
	chown($odu, $gid, $sdir);
	chmod(0750, $sdir);
	my $conf = spew("$dir/opendkim.conf", "Syslog no\nBackground no\nRequireSafeKeys false\n" .
	    "Socket local:$sdir/opendkim.sock\nUMask 007\nUserID opendkim:$USER\n" .
	    "PidFile $dir/opendkim.pid\nMode s\nDomain example.test\nSelector test\n" .
	    "KeyFile $kdir/test.private\nCanonicalization relaxed/simple\n");
	my $log = "$dir/opendkim.log";
	my $pid = SmtpChainTest::spawn(argv => [$opendkim, '-f', '-x', $conf], output => $log);
	SmtpChainTest::on_cleanup('opendkim', sub { SmtpChainTest::stop_pid($pid, 'TERM', 10) });
	wait_until(sub { -S "$sdir/opendkim.sock" || !proc_alive($pid) }, 15);
	die "opendkim did not come up: " . (slurp($log) // '') . "\n" unless -S "$sdir/opendkim.sock";
	my @st = stat("$sdir/opendkim.sock");
	is($st[5], $gid, "the OpenDKIM socket's group is ${USER}'s");
	$dkim = "$sdir/opendkim.sock";
}

# --- the chain, as the user
my $q = user_dir("$dir/quarantine");
my $spool = user_dir("$dir/spool");
my $secret = spew("$dir/root-only", "root only\n");
chmod(0600, $secret);
my $hc = spew("$dir/header_checks", "/^Subject:.*hold me/\tHOLD held by header rule\n" .
    "/^X-Mailer: (.*)\$/\tREPLACE X-Mailer: hidden (was \$1)\n");
chmod(0600, $hc);	# a rule file only root may read: the master's and init()'s business
my $mport = free_port();
my $milter = $dkim ? "filter {\n\tmodule = \"$mod{milter}\";\n\tsocket = \"unix:$dkim\";\n" .
    "\tdefault_action = \"tempfail\";\n}\n" : '';
my $text = <<"EOF" . $milter;
backend = "127.0.0.1:$sport";
user = "$USER";
workers = 2;
quarantine_dir = "$q";
spool_dir = "$spool";
limits { spool_memory = 4096; }
metrics { listen = "127.0.0.1:$mport"; }
filter {
	module = "$mod{regex}";
	header_checks = "$hc";
}
filter {
	module = "$mod{headers}";
	add = [ "X-Scanned-By: smtpchain" ];
}
filter {
	module = "$mod{test}";
	tag = "probe";
	probe_write = "$secret";
}
EOF
my $p = start_proxy($text, name => 'privsep');
my @w;
ok(wait_until(sub { @w = $p->worker_pids; @w == 2 }, 15), '2 workers') or diag($p->log_tail);
dropped_ok($_, "worker $_") for @w;
my $mpid;
ok(wait_until(sub { $mpid = $p->metrics_pid }, 15), 'the metrics server runs');
dropped_ok($mpid, 'metrics server') if $mpid;
my $ms = status($p->pid);
is((split /\t/, $ms->{Uid} // '')[1], 0, 'the master stays root (the supervisor)');

# Mail through regex, headers, milter and the probe, as the user.
my $tag = "privsep-$$";
my $big = ("a body line longer than nothing, so the held body spills to spool_dir\r\n") x 200;
my $c = smtp_connect($p->port, timeout => 30);
$c->read_reply;
$c->ehlo('client.test');
my $r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'],
    data => "From: <sender\@example.test>\r\nTo: <rcpt\@example.org>\r\nSubject: $tag\r\n" .
	"X-Mailer: test-mailer\r\nMessage-ID: <$tag\@example.test>\r\n\r\n$big");
reply_ok($r->{end}, 250, undef, 'a message through the chain: 250');
my ($m) = $sink->wait_find(qr/\Q$tag\E/, 20);
ok($m, 'delivered') or diag($p->log_tail);
my $msg = $m ? $m->{message} : '';
like($msg, qr/^X-Mailer: hidden \(was test-mailer\)$/m, 'regex: the header rewritten');
like($msg, qr/^X-Scanned-By: smtpchain$/m, 'headers: the header added');
like($msg, qr/^X-Testfilter-probe-Probe: open=EACCES$/m,
    'a hook opening a root-only file for writing gets EACCES (its init() could read it)');
SKIP: {
	skip 'opendkim is not installed', 1 unless $dkim;
	like($msg, qr/^DKIM-Signature: v=1;.*d=example\.test/m, 'milter: OpenDKIM signed it, over its unix socket');
}
is(slurp($secret), "root only\n", 'the root-only file is untouched');

# Quarantine: the user's file, 0600.
$r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'],
    data => make_message(subject => "please hold me $tag"));
reply_ok($r->{end}, 250, undef, 'a message to quarantine: 250');
$c->quit;
my @qf;
ok(wait_until(sub { @qf = glob("$q/*.eml"); @qf }, 20), 'a quarantine file') or diag($p->log_tail);
for (@qf) {
	my @st = stat($_);
	is($st[4], $uid, "quarantine file owned by $USER");
	is($st[2] & 07777, 0600, 'quarantine file mode 0600');
}

# A reload: the master reads as root again, the new workers drop again.
my $reloads = () = $p->log_text =~ /info: reloaded: /g;
kill 'HUP', $p->pid;
ok(wait_until(sub { (() = $p->log_text =~ /info: reloaded: /g) > $reloads }, 30), 'reloaded')
    or diag($p->log_tail);
my @w2;
ok(wait_until(sub { @w2 = $p->worker_pids; @w2 == 2 && !grep({ my $x = $_; grep { $_ == $x } @w } @w2) }, 30),
    '2 new workers after the reload');
dropped_ok($_, "worker $_ after the reload") for @w2;
$c = smtp_connect($p->port, timeout => 30);
$c->read_reply;
$c->ehlo('client.test');
$r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'],
    data => make_message(subject => "after the reload $tag"));
reply_ok($r->{end}, 250, undef, 'mail flows after the reload');
$c->quit;
$p->stop_ok('the master exits 0');

# --- chroot: the workers see only that tree; the paths they use are inside it
{
	my $root = "$dir/chroot";
	make_path($root);
	my $cq = user_dir("$root/quarantine");
	user_dir("$root/spool");
	my $cp = start_proxy(<<"EOF", name => 'chroot');
backend = "127.0.0.1:$sport";
user = "$USER";
chroot = "$root";
workers = 1;
quarantine_dir = "/quarantine";
spool_dir = "/spool";
filter {
	module = "$mod{regex}";
	header_checks = "$hc";
}
EOF
	my @cw;
	ok(wait_until(sub { @cw = $cp->worker_pids; @cw == 1 }, 15), 'chroot: a worker');
	dropped_ok($cw[0], 'chroot: the worker') if @cw;
	is(readlink("/proc/$cw[0]/root"), $root, 'chroot: the worker\'s root is the chroot') if @cw;
	$c = smtp_connect($cp->port, timeout => 30);
	$c->read_reply;
	$c->ehlo('client.test');
	$r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'],
	    data => make_message(subject => "chroot relay $tag"));
	reply_ok($r->{end}, 250, undef, 'chroot: a message relayed');
	$r = $c->send_mail(from => 'sender@example.test', to => ['rcpt@example.org'],
	    data => make_message(subject => "chroot hold me $tag"));
	reply_ok($r->{end}, 250, undef, 'chroot: a message quarantined');
	$c->quit;
	ok($sink->wait_find(qr/chroot relay \Q$tag\E/, 20), 'chroot: delivered');
	my @cf;
	ok(wait_until(sub { @cf = glob("$cq/*.eml"); @cf }, 20), 'chroot: quarantined inside the chroot')
	    or diag($cp->log_tail);
	is((stat($cf[0]))[4], $uid, 'chroot: the file is the user\'s') if @cf;
	$cp->stop_ok('chroot: the master exits 0');
}

# --- as the systemd unit runs it: started as the user itself, with the one
# ambient capability CAP_NET_BIND_SERVICE (setpriv does what User= and
# AmbientCapabilities= do); the workers clear it and set no_new_privs.
SKIP: {
	my $setpriv = SmtpChainTest::find_program('setpriv');
	skip 'setpriv (util-linux) is not installed', 8 unless $setpriv;
	my $port = free_port();
	my $conf = spew("$dir/unit.conf", qq{listen = "127.0.0.1:$port";\nbackend = "127.0.0.1:$sport";\n} .
	    qq{hostname = "proxy.test";\nuser = "$USER";\nworkers = 1;\nquarantine_dir = "$q";\n} .
	    qq{spool_dir = "$spool";\n});
	chmod(0644, $conf);
	my $log = "$dir/unit.log";
	my @argv = ($setpriv, "--reuid=$uid", "--regid=$gid", '--clear-groups',
	    '--inh-caps=+net_bind_service', '--ambient-caps=+net_bind_service', $bin, '-c', $conf);
	unshift @argv, SmtpChainTest::valgrind_argv("$dir/unit.valgrind") if $SmtpChainTest::VALGRIND;
	my $pid = SmtpChainTest::spawn(argv => \@argv, output => $log);
	SmtpChainTest::on_cleanup('unit-like proxy', sub { SmtpChainTest::stop_pid($pid, 'TERM', 30) });
	ok(wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 30) &&
	    SmtpChainTest::port_listening($port), 'as the user with CAP_NET_BIND_SERVICE: listening')
	    or diag(slurp($log));
	my $ps = status($pid);
	is((split /\t/, $ps->{Uid} // '')[1], $uid, 'the master runs as the user');
	is(hex($ps->{CapEff} // 0), 1 << 10, 'the master keeps CAP_NET_BIND_SERVICE, and only it');
	my $up = bless { pid => $pid }, 'SmtpChainTest::Proxy';
	my @uw;
	ok(wait_until(sub { @uw = $up->worker_pids; @uw == 1 }, 15), 'a worker');
	dropped_ok($uw[0], 'unit-like: the worker') if @uw;
	is(SmtpChainTest::stop_pid($pid, 'TERM', 30), 0, 'unit-like: the master exits 0');
}

done_testing;
