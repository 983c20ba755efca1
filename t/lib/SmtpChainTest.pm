package SmtpChainTest;

# SmtpChainTest - the integration test harness for smtpchain.
#
# Each t/*.t file starts the real components it needs on loopback, on ports
# it picked itself (bound to port 0 and read back), in its own directory
# under t/tmp/, and stops them by pid at the end, even when it dies (END
# block, watchdog alarm, signal handlers).  Only processes started here are
# ever signalled.
#
# Components:
#   start_proxy(TEXT, %opt)   the daemon ($ENV{SMTPCHAIN} -c FILE), log captured
#   start_sink(%opt)          Postfix's smtp-sink, dumping each message to a file
#   start_postfix(%opt)       a private Postfix instance relaying to a sink
#   start_exim(%opt)          Exim from /opt/exim-test (t/setup-exim.sh)
#   smtp_connect(PORT, %opt)  a raw client (SmtpChainTest::Client) that can
#                             pipeline, read multi-line replies, send any bytes
#   smtp_session(PORT, ITEMS) one scripted session, all replies returned
#   swaks(@args)              the swaks command, bounded by timeout(1)
#
# Environment: SMTPCHAIN (the daemon), SMTPCHAIN_SRCDIR, SMTPCHAIN_BUILDDIR
# (set by "make check"), SMTPCHAIN_KEEP=1 keeps t/tmp/NAME after a pass,
# SMTPCHAIN_EXIM overrides /opt/exim-test.  SMTPCHAIN_VALGRIND=1 runs every
# daemon start_proxy starts under valgrind (memcheck, definite leaks are
# errors; its report in NAME.valgrind.PID), stop_ok then fails on any error
# it reported, and every bounded wait (wait_until, client reads) is
# stretched by SMTPCHAIN_TIME_SCALE (default 5 under valgrind, else 1).

use strict;
use warnings;

use Cwd qw(abs_path getcwd);
use Errno qw(EINTR EAGAIN);
use Exporter qw(import);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::IP;
use POSIX qw(WNOHANG _exit setsid);
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(time sleep);

our @EXPORT = qw(
	tmpdir free_port wait_until slurp spew
	start_proxy start_sink start_postfix start_exim exim_missing
	smtp_connect smtp_session swaks
	reply_ok ehlo_keywords dot_stuff to_lf make_message
	proc_alive
);

our $VALGRIND = $ENV{SMTPCHAIN_VALGRIND} ? 1 : 0;
# How much longer every bounded wait may take (a slower daemon under valgrind).
our $TIME_SCALE = $ENV{SMTPCHAIN_TIME_SCALE} || ($VALGRIND ? 5 : 1);
our $WATCHDOG = ($ENV{SMTPCHAIN_WATCHDOG} || 900) * ($VALGRIND ? 2 : 1);

my @CLEANUPS;		# [ description, code ], run in reverse order at END
my $TMPDIR;
my $OWNER_PID = $$;	# END work is done only in the test process, not forks

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "watchdog: test file ran longer than $WATCHDOG seconds\n" };
$SIG{TERM} = $SIG{INT} = sub { die "killed by signal\n" };
alarm($WATCHDOG);

# ---------------------------------------------------------------------------
# Paths and small utilities

# The source tree (for sample configs), from make check or from this file.
sub srcdir {
	return $ENV{SMTPCHAIN_SRCDIR} if $ENV{SMTPCHAIN_SRCDIR};
	return abs_path(dirname(__FILE__) . '/../..');
}

# This test file's private directory, t/tmp/NAME in the build tree, emptied
# at the start and removed after a pass (kept after a failure for a look).
sub tmpdir {
	return $TMPDIR if $TMPDIR;
	my $base = ($ENV{SMTPCHAIN_BUILDDIR} || srcdir()) . '/t/tmp';
	# smtp-sink (as nobody), Postfix and Exim (as their users) must reach
	# their directories: a build tree under a private directory (/root/...)
	# gets its test files under /tmp instead.
	$base = "/tmp/smtpchain-test.$>" unless traversable($base);
	my $name = basename($0);
	$name =~ s/\.t\z//;
	$name =~ s/[^A-Za-z0-9_.-]/_/g;
	my $dir = "$base/$name";
	remove_tree($dir) if -e $dir;
	make_path($dir, { mode => 0755 });
	chmod 0755, $base, $dir;
	$TMPDIR = abs_path($dir);
	return $TMPDIR;
}

# Whether every existing directory above path lets others through (o+x).
sub traversable {
	my ($path) = @_;
	my $p = abs_path(dirname($path)) // return 0;
	while (1) {
		my @st = stat($p) or return 0;
		return 0 unless $st[2] & 01;
		last if $p eq '/';
		$p = dirname($p);
	}
	return 1;
}

# Whether the daemon under test is built with AddressSanitizer or runs under
# valgrind (its memory use is then not the daemon's own).
sub sanitized {
	return 1 if $VALGRIND;
	my $bin = $ENV{SMTPCHAIN} or return 0;
	my $t = slurp($bin) // return 0;
	return index($t, '__asan_init') >= 0 ? 1 : 0;
}

# Read a whole file (binary), undef if it cannot be read.
sub slurp {
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return undef;
	local $/;
	my $s = <$fh>;
	close $fh;
	return defined $s ? $s : '';
}

# Write a whole file (binary).
sub spew {
	my ($file, $text, $mode) = @_;
	open(my $fh, '>:raw', $file) or die "cannot write $file: $!\n";
	print $fh $text;
	close $fh or die "cannot write $file: $!\n";
	chmod $mode, $file if defined $mode;
	return $file;
}

# A TCP port nobody listens on now: bind port 0 on loopback and read it back.
sub free_port {
	my ($host) = @_;
	$host ||= '127.0.0.1';
	my $s = IO::Socket::IP->new(LocalHost => $host, LocalPort => 0,
	    Proto => 'tcp', Listen => 1, ReuseAddr => 1)
	    or die "free_port: cannot bind $host:0: $@\n";
	my $port = $s->sockport;
	close $s;
	return $port;
}

# Poll code every step seconds until it returns true or timeout seconds
# (times $TIME_SCALE) pass; returns its last value.  Bounded in time and in
# count.
sub wait_until {
	my ($code, $timeout, $step) = @_;
	$timeout = ($timeout || 10) * $TIME_SCALE;
	$step ||= 0.05;
	my $deadline = time + $timeout;
	my $max = int($timeout / $step) + 2;
	for (1 .. $max) {
		my $v = $code->();
		return $v if $v;
		last if time >= $deadline;
		sleep $step;
	}
	return $code->();
}

# The targets of a process's descriptors, from /proc: { fd => readlink }
# ("socket:[123]", "pipe:[456]", "anon_inode:[eventpoll]", a path).
sub fd_targets {
	my ($pid) = @_;
	my %t;
	opendir(my $d, "/proc/$pid/fd") or return {};
	for my $fd (grep { /^\d+\z/ } readdir $d) {
		my $l = readlink("/proc/$pid/fd/$fd");
		$t{$fd} = $l if defined $l;
	}
	closedir $d;
	return \%t;
}

# Whether a process exists (and is not a zombie we could reap).
sub proc_alive {
	my ($pid) = @_;
	return 0 unless $pid;
	waitpid($pid, WNOHANG);
	return 0 unless kill(0, $pid);
	my $stat = slurp("/proc/$pid/stat");
	return 0 if defined $stat && $stat =~ /^\d+ \(.*\) Z/s;
	return 1;
}

# Whether something listens on this TCP port (from /proc/net/tcp{,6}),
# checked without connecting, so no session is opened by the probe.
sub port_listening {
	my ($port) = @_;
	my $hex = sprintf('%04X', $port);
	for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
		my $t = slurp($f);
		next unless defined $t;
		return 1 if $t =~ /^\s*\d+:\s+[0-9A-F]+:$hex\s+[0-9A-F]+:[0-9A-F]+\s+0A\s/m;
	}
	return 0;
}

# Start a program in the background, stdout and stderr to a file; returns the pid.
sub spawn {
	my (%o) = @_;
	my @argv = @{ $o{argv} };
	my $pid = fork();
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		# Child: never run the parent's END blocks; a group of its own so a
		# terminal ^C to prove does not race our orderly stop.
		setpgrp(0, 0);
		$SIG{$_} = 'DEFAULT' for qw(PIPE ALRM TERM INT);
		open(STDIN, '<', '/dev/null');
		if ($o{output}) {
			open(STDOUT, '>>', $o{output}) or _exit(126);
			open(STDERR, '>&', \*STDOUT) or _exit(126);
		}
		chdir($o{chdir}) if $o{chdir};
		%ENV = (%ENV, %{ $o{env} || {} });
		{ no warnings 'exec'; exec { $argv[0] } @argv; }
		print STDERR "exec $argv[0]: $!\n";
		_exit(127);
	}
	return $pid;
}

# Send sig to a child we started, wait up to timeout seconds; then SIGKILL.
# Returns the wait status ($?), or undef if it was not our child.
sub stop_pid {
	my ($pid, $sig, $timeout) = @_;
	return undef unless $pid;
	$sig ||= 'TERM';
	$timeout ||= 10;
	my $status;
	my $r = waitpid($pid, WNOHANG);
	return $? if $r == $pid;
	return undef if $r < 0;
	kill($sig, $pid);
	wait_until(sub {
		my $w = waitpid($pid, WNOHANG);
		if ($w == $pid) { $status = $?; return 1 }
		return $w < 0;
	}, $timeout, 0.05);
	unless (defined $status) {
		if (kill(0, $pid)) {
			kill('KILL', $pid);
			waitpid($pid, 0) == $pid and $status = $?;
		}
	}
	return $status;
}

# Register cleanup work for END.
sub on_cleanup {
	my ($what, $code) = @_;
	push @CLEANUPS, [$what, $code];
}

END {
	if ($$ == $OWNER_PID) {
		my $exit = $?;
		alarm(0);
		local $SIG{ALRM} = sub { die "cleanup timed out\n" };
		for my $c (reverse @CLEANUPS) {
			eval { alarm(60); $c->[1]->(); alarm(0); 1 }
			    or print STDERR "# cleanup of $c->[0] failed: $@";
		}
		@CLEANUPS = ();
		if ($TMPDIR) {
			my $passing = Test::More->builder->is_passing && $exit == 0;
			if ($passing && !$ENV{SMTPCHAIN_KEEP}) {
				remove_tree($TMPDIR);
			} else {
				print STDERR "# files kept in $TMPDIR\n";
			}
		}
		$? = $exit;
	}
}

# ---------------------------------------------------------------------------
# The proxy

# start_proxy(TEXT, %opt): write TEXT as the config (adding listen and
# hostname lines when it has none), start the daemon in the foreground with
# its stderr in a log file, wait until it listens.  Options: name (files are
# NAME.conf and NAME.log), args (extra command line arguments), wait (0 to
# not wait for the port, e.g. for a config that must fail), env (a hash of
# environment variables for the daemon).
# Returns a SmtpChainTest::Proxy; dies if it does not come up.
sub start_proxy {
	my ($text, %o) = @_;
	my $bin = $ENV{SMTPCHAIN} or die "SMTPCHAIN is not set (run through make check)\n";
	die "SMTPCHAIN=$bin is not executable\n" unless -x $bin;
	my $dir = tmpdir();
	my $name = $o{name} || 'proxy';
	my $port;
	if ($text =~ /^\s*listen\s*[=:]?\s*\[?\s*"(?:\[[^\]]*\]|[^":]*):(\d+)"/m) {
		$port = $1;
	} else {
		$port = free_port();
		$text = qq{listen = "127.0.0.1:$port";\n} . $text;
	}
	$text = qq{hostname = "proxy.test";\n} . $text unless $text =~ /^\s*hostname\b/m;
	$text = with_user($text);
	my $conf = spew("$dir/$name.conf", $text);
	my $log = "$dir/$name.log";
	my @argv = ($bin, '-c', $conf, @{ $o{args} || [] });
	unshift @argv, valgrind_argv("$dir/$name.valgrind") if $VALGRIND;
	my $pid = spawn(argv => \@argv, output => $log, env => $o{env});
	my $p = bless { pid => $pid, port => $port, conf => $conf, log => $log,
	    name => $name, valgrind => $VALGRIND ? "$dir/$name.valgrind" : undef },
	    'SmtpChainTest::Proxy';
	on_cleanup("proxy $pid", sub { $p->stop });
	return $p if defined $o{wait} && !$o{wait};
	my $up = wait_until(sub { port_listening($port) || !proc_alive($pid) }, 15);
	unless ($up && proc_alive($pid) && port_listening($port)) {
		my $l = slurp($log) // '';
		$l =~ s/^/#   /mg;
		die "proxy did not come up on port $port; its log:\n$l\n";
	}
	return $p;
}

# A config as the tests run it: the daemon starts as root here, which it
# refuses without "user", so one that names none gets user = "root" at the
# end (no line number of the text moves).  t/8x-privsep.t runs it as a real
# unprivileged user.
sub with_user {
	my ($text) = @_;
	return $text if $text =~ /^\s*user\s*[=:]?\s*"/m || $> != 0;
	$text .= "\n" unless $text =~ /\n\z/;
	return $text . qq{user = "root";\n};
}

# The valgrind command line start_proxy puts before the daemon's: memcheck,
# exit status 99 on any error (definite leaks count), forks followed, one
# report file per process (PREFIX.PID), known false positives (PCRE2's JIT)
# suppressed by t/valgrind.supp.
sub valgrind_argv {
	my ($prefix) = @_;
	my $vg = find_program('valgrind') or die "SMTPCHAIN_VALGRIND is set but valgrind is not installed\n";
	return ($vg, '-q', '--error-exitcode=99', '--leak-check=full',
	    '--errors-for-leak-kinds=definite', '--show-leak-kinds=definite',
	    '--track-fds=no', '--child-silent-after-fork=no', '--trace-children=no',
	    '--num-callers=30', '--suppressions=' . srcdir() . '/t/valgrind.supp',
	    "--log-file=$prefix.%p");
}

# ---------------------------------------------------------------------------
# smtp-sink

# start_sink(%opt): Postfix's smtp-sink on a free port, every complete mail
# transaction dumped to a file in its own directory, its -v conversation log
# (commands only) in NAME.smtp-sink.log.  Options: name, hostname (default sink.test),
# args (extra flags, e.g. ['-W', 'RCPT:30'] or ['-q', 'RCPT']), port,
# verbose (default 1).
sub start_sink {
	my (%o) = @_;
	my $dir = tmpdir();
	my $name = $o{name} || 'sink';
	my $port = $o{port} || free_port();
	my $dump = "$dir/$name.dump";
	make_path($dump);
	chmod 0777, $dump;
	my $log = "$dir/$name.smtp-sink.log";	# not NAME.log: a proxy may share the name
	my @argv = ('smtp-sink');
	push @argv, '-u', 'nobody' if $> == 0;
	push @argv, '-v' if !defined $o{verbose} || $o{verbose};
	push @argv, '-d', "$dump/msg.", '-h', $o{hostname} || 'sink.test',
	    @{ $o{args} || [] }, "127.0.0.1:$port", $o{backlog} || 256;
	my $bin = find_program('smtp-sink') or die "smtp-sink not found (apt-get install postfix)\n";
	$argv[0] = $bin;
	my $pid = spawn(argv => \@argv, output => $log);
	my $s = bless { pid => $pid, port => $port, dir => $dump, log => $log,
	    name => $name }, 'SmtpChainTest::Sink';
	on_cleanup("sink $pid", sub { $s->stop });
	wait_until(sub { port_listening($port) || !proc_alive($pid) }, 10);
	die "smtp-sink did not come up on port $port: " . (slurp($log) // '') . "\n"
	    unless port_listening($port) && proc_alive($pid);
	return $s;
}

# The full path of a program in PATH, /usr/sbin or /sbin.
sub find_program {
	my ($prog) = @_;
	for my $d (split(/:/, $ENV{PATH} || ''), '/usr/sbin', '/sbin', '/usr/bin') {
		return "$d/$prog" if -x "$d/$prog" && !-d _;
	}
	return undef;
}

# ---------------------------------------------------------------------------
# Postfix

# start_postfix(%opt): a private Postfix in tmpdir()/NAME: its own
# config_directory, queue_directory, data_directory and maillog_file; one
# smtpd on 127.0.0.1:PORT that trusts loopback for XCLIENT and XFORWARD; all
# mail relayed to relay_port (an smtp-sink, so the delivered message can be
# read back exactly).  Options: name, port, relay_port (required), main (extra
# main.cf text), rcpt_access (a pcre table text for check_recipient_access),
# smtpd_args (extra -o options for the smtpd line), tls_cert and tls_key
# (PEM files: the smtpd offers STARTTLS with them, security level "may",
# TLS logged and named in its Received header; a tlsmgr is added).
sub start_postfix {
	my (%o) = @_;
	my $postfix = find_program('postfix') or die "postfix not found\n";
	die "start_postfix: needs root\n" unless $> == 0;
	my $name = $o{name} || 'postfix';
	my $top = tmpdir() . "/$name";
	my ($conf, $queue, $data) = ("$top/conf", "$top/queue", "$top/data");
	make_path($conf, $queue, $data);
	chmod 0755, $top, $conf, $queue;
	my ($uid, $gid) = (getpwnam('postfix'))[2, 3];
	die "no postfix user\n" unless defined $uid;
	chown $uid, $gid, $data;
	my $port = $o{port} || free_port();
	my $relay = $o{relay_port} or die "start_postfix: relay_port is required\n";
	my $maillog = "$top/maillog";
	my $rcpt = '';
	my $tls = "smtpd_tls_security_level = none\n";
	my $tlsmgr = '';
	if ($o{tls_cert}) {
		$tls = "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = $o{tls_cert}\n"
		    . "smtpd_tls_key_file = " . ($o{tls_key} || $o{tls_cert}) . "\n"
		    . "smtpd_tls_loglevel = 1\nsmtpd_tls_received_header = yes\n";
		$tlsmgr = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n";
	}
	if (defined $o{rcpt_access}) {
		spew("$conf/rcpt_access.pcre", $o{rcpt_access});
		$rcpt = "smtpd_recipient_restrictions = check_recipient_access pcre:$conf/rcpt_access.pcre, permit_mynetworks, reject\n";
	}
	spew("$conf/main.cf", <<"EOF" . $rcpt . ($o{main} || ''));
# main.cf written by SmtpChainTest for one test
compatibility_level = 3.6
queue_directory = $queue
data_directory = $data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydomain = postfix.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$relay
smtp_host_lookup = native
disable_dns_lookups = yes
maillog_file = $maillog
maillog_file_prefixes = $top
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
# Postfix before 3.9 takes a bare LF as a line end: the smuggling tests
# rely on that (and check it without the proxy first).
smtpd_forbid_bare_newline = no
${tls}smtp_tls_security_level = none
biff = no
# One delivery per connection: smtp-sink finishes a dump file only at the
# next command, so a cached idle connection would delay it.
smtp_connection_cache_on_demand = no
message_size_limit = 20000000
delay_warning_time = 0
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
EOF
	my $extra = join(' ', map { "-o $_" } @{ $o{smtpd_args} || [] });
	spew("$conf/master.cf", <<"EOF" . $tlsmgr);
# master.cf written by SmtpChainTest: no chroot, one smtpd on the test's port
127.0.0.1:$port inet n - n - - smtpd $extra
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	my $out = `$postfix -c $conf start 2>&1`;
	my $rc = $?;
	my $pf = bless { top => $top, conf => $conf, queue => $queue, port => $port,
	    maillog => $maillog, postfix => $postfix, name => $name }, 'SmtpChainTest::Postfix';
	on_cleanup("postfix $conf", sub { $pf->stop });
	die "postfix -c $conf start failed ($rc): $out\n" if $rc != 0;
	wait_until(sub { port_listening($port) && $pf->master_pid }, 20);
	die "postfix did not come up on port $port: $out\n" . (slurp($maillog) // '') . "\n"
	    unless port_listening($port);
	$pf->{master_pid} = $pf->master_pid;
	return $pf;
}

# ---------------------------------------------------------------------------
# Exim

# Where t/setup-exim.sh unpacked Exim.
sub exim_root { $ENV{SMTPCHAIN_EXIM} || '/opt/exim-test' }

# undef when Exim can be run, else the reason it cannot (for skip()).
sub exim_missing {
	my $root = exim_root();
	return "Exim not unpacked in $root (run t/setup-exim.sh as root)"
	    unless -x "$root/usr/sbin/exim4";
	return "/usr/sbin/exim4 is missing (run t/setup-exim.sh as root)"
	    unless -x '/usr/sbin/exim4';
	return "no Debian-exim user (run t/setup-exim.sh as root)"
	    unless defined getpwnam('Debian-exim');
	return "Exim tests need root" unless $> == 0;
	my $v = `/usr/sbin/exim4 -C /dev/null -bV 2>&1`;
	return "exim4 does not run: $v" unless $v =~ /Exim version/;
	return undef;
}

# start_exim(%opt): Exim 4 in the foreground (-bdf) on a free port with a
# minimal config: mail for example.test is delivered to a maildir (one file
# per message), RCPT to reject@example.test is refused with "550 custom no
# such user here".  Options: name, port, config (extra main-section text).
sub start_exim {
	my (%o) = @_;
	my $why = exim_missing();
	die "start_exim: $why\n" if $why;
	my $name = $o{name} || 'exim';
	my $top = tmpdir() . "/$name";
	my ($spool, $logdir, $mail) = ("$top/spool", "$top/log", "$top/mail");
	make_path($spool, $logdir, $mail);
	chmod 0755, $top;
	my ($uid, $gid) = (getpwnam('Debian-exim'))[2, 3];
	chown $uid, $gid, $spool, $logdir, $mail;
	my $port = $o{port} || free_port();
	my $conf = spew("$top/exim.conf", <<"EOF", 0644);
# exim.conf written by SmtpChainTest for one test
primary_hostname = exim.test
spool_directory = $spool
log_file_path = $logdir/%slog
keep_environment =
domainlist local_domains = example.test : exim.test
host_lookup =
rfc1413_hosts =
tls_advertise_hosts = *
pipelining_advertise_hosts = *
pipelining_connect_advertise_hosts = *
prdr_enable = true
chunking_advertise_hosts = *
smtputf8_advertise_hosts = *
acl_smtp_rcpt = acl_rcpt
@{[ $o{config} || '' ]}
begin acl
acl_rcpt:
  deny    message = 550 custom no such user here
          local_parts = reject
  accept  domains = +local_domains
  deny    message = relay not permitted

begin routers
to_maildir:
  driver = accept
  domains = +local_domains
  transport = maildir_delivery

begin transports
maildir_delivery:
  driver = appendfile
  directory = $mail
  maildir_format = true
  create_directory = true
  user = Debian-exim
  group = Debian-exim

begin retry
*   *   F,1h,10m
@{[ $o{authenticators} ? "\nbegin authenticators\n$o{authenticators}" : '' ]}
EOF
	my $log = "$top/exim.out";
	my $pid = spawn(argv => ['/usr/sbin/exim4', '-C', $conf, '-bdf', '-oX', "127.0.0.1:$port"],
	    output => $log);
	my $e = bless { pid => $pid, port => $port, top => $top, mail => $mail,
	    logdir => $logdir, log => $log, name => $name }, 'SmtpChainTest::Exim';
	on_cleanup("exim $pid", sub { $e->stop });
	wait_until(sub { port_listening($port) || !proc_alive($pid) }, 15);
	die "exim did not come up on port $port: " . (slurp($log) // '') .
	    (slurp("$logdir/mainlog") // '') . (slurp("$logdir/paniclog") // '') . "\n"
	    unless port_listening($port) && proc_alive($pid);
	return $e;
}

# ---------------------------------------------------------------------------
# Clients

# smtp_connect(PORT, %opt): a SmtpChainTest::Client connected to host (default
# 127.0.0.1) from local_addr (e.g. 127.0.0.2), replies read within timeout
# seconds (default 15); undef (and $@) when the connection fails.
sub smtp_connect {
	my ($port, %o) = @_;
	return SmtpChainTest::Client->new(port => $port, %o);
}

# smtp_session(PORT, ITEMS, %opt): connect, read the greeting, then for each
# item: a string is a command line (CRLF added) that gets one reply; a
# scalar ref is raw bytes sent as they are with no reply expected; an array
# ref [BYTES, N] is raw bytes followed by N replies.  With pipeline => 1
# everything is sent in one write and the replies read afterwards.  Returns
# the list of replies, greeting first (missing replies are hashes with eof or
# timeout set).  The connection is closed at the end.
sub smtp_session {
	my ($port, $items, %o) = @_;
	my $c = smtp_connect($port, %o) or die "cannot connect to port $port: $@\n";
	my @replies = ($c->read_reply);
	my @plan;
	for my $it (@$items) {
		if (ref $it eq 'SCALAR') { push @plan, [$$it, 0] }
		elsif (ref $it eq 'ARRAY') { push @plan, [@$it] }
		else { push @plan, ["$it\r\n", 1] }
	}
	if ($o{pipeline}) {
		$c->send(join('', map { $_->[0] } @plan));
		my $n = 0;
		$n += $_->[1] for @plan;
		push @replies, $c->read_reply for 1 .. $n;
	} else {
		for my $p (@plan) {
			$c->send($p->[0]);
			push @replies, $c->read_reply for 1 .. $p->[1];
		}
	}
	$c->close;
	return @replies;
}

# reply_ok(REPLY, CODE, ENH, NAME): one test that the reply has this code and,
# when ENH is defined, this enhanced status code; shows the reply otherwise.
sub reply_ok {
	my ($r, $code, $enh, $name) = @_;
	my $ok = $r && defined $r->{code} && $r->{code} == $code
	    && (!defined $enh || (defined $r->{enh} && $r->{enh} eq $enh));
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok($ok, $name) or diag("expected $code" . (defined $enh ? " $enh" : '') .
	    ", got: " . SmtpChainTest::Client::describe($r));
	return $ok;
}

# The keyword lines of an EHLO reply (after the first line), "250-" removed.
sub ehlo_keywords {
	my ($r) = @_;
	my @l = @{ $r->{lines} || [] };
	shift @l;
	return map { substr($_, 4) } @l;
}

# Lines beginning with "." get another "." (RFC 5321 4.5.2); text in CRLF form.
sub dot_stuff {
	my ($text) = @_;
	(my $s = $text) =~ s/^\./../mg;
	return $s;
}

# CRLF to LF (how smtp-sink, Postfix and Exim store messages).
sub to_lf {
	my ($text) = @_;
	(my $s = $text) =~ s/\r\n/\n/g;
	return $s;
}

# A complete, well-formed message (CRLF lines) with the headers MTAs would
# otherwise add, so what is delivered can be compared byte for byte.
sub make_message {
	my (%o) = @_;
	my $id = $o{id} || sprintf('%d.%d', $$, int(rand(1e9)));
	my $from = $o{from} || 'sender@client.test';
	my $to = $o{to} || 'rcpt@example.test';
	my $body = $o{body} // "Hello.\r\n.A line starting with a dot.\r\n..Two dots.\r\n\r\nLast line.\r\n";
	return "From: <$from>\r\nTo: <$to>\r\nSubject: " . ($o{subject} || "test $id") .
	    "\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\nMessage-ID: <$id\@client.test>\r\n" .
	    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" . $body;
}

# swaks(@args): run swaks (bounded by timeout(1), 60 s by default or
# SWAKS_TIMEOUT) and return (exit status, combined output).
sub swaks {
	my (@args) = @_;
	my $limit = $ENV{SWAKS_TIMEOUT} || 60;
	my $out = '';
	my $pid = open(my $fh, '-|');
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		open(STDERR, '>&', \*STDOUT);
		open(STDIN, '<', '/dev/null');
		exec('timeout', '-k', '5', $limit, 'swaks', @args) or _exit(127);
	}
	local $/;
	$out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# ===========================================================================
package SmtpChainTest::Proxy;

use Time::HiRes qw(time sleep);

sub pid  { $_[0]{pid} }
sub port { $_[0]{port} }

# The daemon's log so far.
sub log_text {
	my ($self) = @_;
	return SmtpChainTest::slurp($self->{log}) // '';
}

# Wait (bounded) until the log matches re; returns the match or undef.
sub wait_log {
	my ($self, $re, $timeout) = @_;
	my $m;
	SmtpChainTest::wait_until(sub {
		my $l = $self->log_text;
		my @all = $l =~ /$re/g;
		$m = $all[-1] if @all;
		return scalar @all;
	}, $timeout || 10);
	return $m;
}

# The pids of the master's worker processes now (its children, from /proc,
# but the metrics server, which calls itself sc-metrics).
sub worker_pids {
	my ($self) = @_;
	my @pids;
	opendir(my $dh, '/proc') or return ();
	for my $p (grep { /^\d+\z/ } readdir $dh) {
		my $st = SmtpChainTest::slurp("/proc/$p/stat") // next;
		push @pids, $p if $st =~ /^\d+ \((.*)\) [^Z] (\d+) /s && $2 == $self->{pid} &&
		    $1 ne 'sc-metrics';
	}
	closedir $dh;
	return sort { $a <=> $b } @pids;
}

# The pid of the master's metrics server (sc-metrics), undef if none runs.
sub metrics_pid {
	my ($self) = @_;
	opendir(my $dh, '/proc') or return undef;
	for my $p (grep { /^\d+\z/ } readdir $dh) {
		my $st = SmtpChainTest::slurp("/proc/$p/stat") // next;
		return $p if $st =~ /^\d+ \(sc-metrics\) [^Z] (\d+) /s && $1 == $self->{pid};
	}
	return undef;
}

# Peak resident set size (VmHWM) in kB of the biggest of the master and its
# workers, undef if the master is gone.
sub vmhwm {
	my ($self) = @_;
	my $max;
	for my $p ($self->{pid}, $self->worker_pids) {
		my $s = SmtpChainTest::slurp("/proc/$p/status") // next;
		next unless $s =~ /^VmHWM:\s+(\d+)\s+kB/m;
		$max = $1 if !defined $max || $1 > $max;
	}
	return $max;
}

sub alive { SmtpChainTest::proc_alive($_[0]{pid}) }

# Stop the daemon (SIGTERM, bounded wait, then SIGKILL); returns the wait
# status once, and the same value on later calls.
sub stop {
	my ($self, $sig, $timeout) = @_;
	return $self->{status} if exists $self->{status};
	$self->{status} = SmtpChainTest::stop_pid($self->{pid}, $sig || 'TERM', $timeout || 40);
	return $self->{status};
}

# Wait (bounded) for it to exit by itself, e.g. after a signal the test
# sent; returns the wait status, undef if it is still running.
sub wait_exit {
	my ($self, $timeout) = @_;
	return $self->{status} if exists $self->{status};
	my $st;
	SmtpChainTest::wait_until(sub {
		my $w = waitpid($self->{pid}, POSIX::WNOHANG());
		$st = $? if $w == $self->{pid};
		return $w != 0;
	}, $timeout || 40);
	$self->{status} = $st if defined $st;
	return $st;
}

# Test: SIGTERM makes it exit 0, and its log has no sanitizer report.
sub stop_ok {
	my ($self, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $st = $self->stop;
	my $ok = Test::More::ok(defined $st && $st == 0, $name || "proxy exits 0 on SIGTERM");
	Test::More::diag("exit status: " . (defined $st ? sprintf('0x%x', $st) : 'none')
	    . "\n" . $self->log_tail) unless $ok;
	my $l = $self->log_text;
	Test::More::unlike($l, qr/(ERROR: (?:Address|Leak)Sanitizer|runtime error: |panic: )/,
	    "no sanitizer report or panic in the proxy log");
	if ($self->{valgrind}) {
		my $report = $self->valgrind_report;
		Test::More::is($report, '', 'valgrind reported no error')
		    or Test::More::diag("valgrind reports in $self->{valgrind}.*");
	}
	return $ok;
}

# What valgrind wrote about this daemon (and its forks), '' when nothing.
sub valgrind_report {
	my ($self) = @_;
	return '' unless $self->{valgrind};
	my $all = '';
	for my $f (sort glob("$self->{valgrind}.*")) {
		my $t = SmtpChainTest::slurp($f) // next;
		$all .= "== $f\n$t" if $t =~ /\S/;
	}
	return $all;
}

# The last lines of its log, indented for diag().
sub log_tail {
	my ($self, $n) = @_;
	my @l = split /\n/, $self->log_text;
	@l = @l[-($n || 30) .. -1] if @l > ($n || 30);
	return join('', map { "#   $_\n" } @l);
}

# ===========================================================================
package SmtpChainTest::Sink;

use Time::HiRes qw(time sleep);

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }

# The sink's -v log: commands it received, one "smtp-sink: CMD" line each.
sub log_text { SmtpChainTest::slurp($_[0]{log}) // '' }

# Commands the sink received, in order (from the -v log).
sub commands {
	my ($self) = @_;
	my @c;
	for (split /\n/, $self->log_text) {
		next unless /^\S*smtp-sink: (.*)$/;
		my $l = $1;
		next if $l =~ /^(?:name_mask|trying\.\.\.|connect |vstream_tweak|fd=|smtp_stream_setup|disconnect|warning:|fatal:|  )/;
		push @c, $l;
	}
	return @c;
}

# Files of the mail transactions completed (dump files the sink no longer
# has open), oldest first.
sub files {
	my ($self) = @_;
	opendir(my $d, $self->{dir}) or return ();
	my @f = map { "$self->{dir}/$_" } grep { /^msg\./ } readdir $d;
	closedir $d;
	my %open;
	if (opendir(my $fd, "/proc/$self->{pid}/fd")) {
		for (readdir $fd) {
			my $t = readlink("/proc/$self->{pid}/fd/$_");
			$open{$t} = 1 if defined $t;
		}
		closedir $fd;
	}
	@f = grep { !$open{$_} } @f;
	my %t = map { $_ => (Time::HiRes::stat($_))[9] // 0 } @f;
	@f = sort { $t{$a} <=> $t{$b} || $a cmp $b } @f;
	return @f;
}

# Messages received so far, parsed (see parse).
sub messages {
	my ($self) = @_;
	return map { parse($_) } $self->files;
}

# The messages whose text matches re (e.g. a unique Subject), in file order.
# The sink closes its dump files lazily (at the next command), so file times
# do not tell the order of messages: find them by content.
sub find {
	my ($self, $re) = @_;
	return grep { $_->{message} =~ $re } $self->messages;
}

# Wait (bounded) until a message matches re; returns the matching ones.
sub wait_find {
	my ($self, $re, $timeout) = @_;
	my @m;
	SmtpChainTest::wait_until(sub { @m = $self->find($re); scalar @m }, $timeout || 15);
	return @m;
}

# Wait (bounded) until at least n messages are there; returns them all.
sub wait_messages {
	my ($self, $n, $timeout) = @_;
	SmtpChainTest::wait_until(sub { my @f = $self->files; @f >= $n }, $timeout || 15);
	return $self->messages;
}

# Parse one dump file: the sink's own records (X-Client-Addr, X-Mail-Args,
# X-Rcpt-Args..., its Received header), then the message as received (LF
# line ends, dot-stuffing removed), then one empty line the sink adds.
# Returns { file, client, helo, mail, rcpt => [...], received, message, size }.
sub parse {
	my ($file) = @_;
	my $t = SmtpChainTest::slurp($file) // '';
	my %m = (file => $file, rcpt => [], raw => $t);
	while ($t =~ s/\A(X-[A-Za-z-]+): ([^\n]*)\n//) {
		my ($k, $v) = ($1, $2);
		if ($k eq 'X-Client-Addr') { $m{client} = $v }
		elsif ($k eq 'X-Client-Proto') { $m{proto} = $v }
		elsif ($k eq 'X-Helo-Args') { $m{helo} = $v }
		elsif ($k eq 'X-Mail-Args') { $m{mail} = $v }
		elsif ($k eq 'X-Rcpt-Args') { push @{ $m{rcpt} }, $v }
	}
	if ($t =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//) {
		$m{received} = $1;
	}
	$t =~ s/\n\z//;		# the empty line smtp-sink appends
	$m{message} = $t;
	$m{size} = length $t;
	return \%m;
}

sub stop {
	my ($self) = @_;
	return $self->{status} if exists $self->{status};
	$self->{status} = SmtpChainTest::stop_pid($self->{pid}, 'TERM', 10);
	return $self->{status};
}

# ===========================================================================
package SmtpChainTest::Postfix;

use Time::HiRes qw(time sleep);

sub port { $_[0]{port} }

# The master's pid from its pid file, if it runs.
sub master_pid {
	my ($self) = @_;
	my $p = SmtpChainTest::slurp("$self->{queue}/pid/master.pid") // return undef;
	return $p =~ /(\d+)/ && kill(0, $1) ? $1 : undef;
}

sub maillog { SmtpChainTest::slurp($_[0]{maillog}) // '' }

# Wait (bounded) until the maillog matches re; returns the last match or undef.
sub wait_maillog {
	my ($self, $re, $timeout) = @_;
	my $m;
	SmtpChainTest::wait_until(sub {
		my @all = $self->maillog =~ /$re/g;
		$m = $all[-1] if @all;
		return scalar @all;
	}, $timeout || 15);
	return $m;
}

# Messages Postfix accepted (queue ids of its qmgr "from=" lines).
sub queued {
	my ($self) = @_;
	my %id;
	my $log = $self->maillog;	# one string: //g keeps its place in it
	$id{$1} = 1 while $log =~ /qmgr\[\d+\]: ([0-9A-F]+): from=/g;
	return sort keys %id;
}

# "postfix stop", then the master by pid if it is still there.
sub stop {
	my ($self) = @_;
	return if $self->{stopped}++;
	my $pid = $self->master_pid || $self->{master_pid};
	system("timeout 30 $self->{postfix} -c $self->{conf} stop >/dev/null 2>&1");
	if ($pid) {
		SmtpChainTest::wait_until(sub { !kill(0, $pid) }, 15);
		kill('KILL', $pid) if kill(0, $pid);
	}
}

# ===========================================================================
package SmtpChainTest::Exim;

use Time::HiRes qw(time sleep);

sub port { $_[0]{port} }

sub mainlog { SmtpChainTest::slurp("$_[0]{logdir}/mainlog") // '' }

# Delivered message files (maildir new/), oldest first.
sub files {
	my ($self) = @_;
	my $d = "$self->{mail}/new";
	opendir(my $dh, $d) or return ();
	my @f = map { "$d/$_" } grep { !/^\./ } readdir $dh;
	closedir $dh;
	my %t = map { $_ => (Time::HiRes::stat($_))[9] // 0 } @f;
	@f = sort { $t{$a} <=> $t{$b} || $a cmp $b } @f;
	return @f;
}

# Delivered messages: { file, received (Exim's trace header), message (the
# rest, LF line ends) }.
sub messages {
	my ($self) = @_;
	my @m;
	for my $f ($self->files) {
		my $t = SmtpChainTest::slurp($f) // '';
		my %m = (file => $f, raw => $t);
		$m{received} = $1 if $t =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//;
		$m{message} = $t;
		push @m, \%m;
	}
	return @m;
}

sub wait_messages {
	my ($self, $n, $timeout) = @_;
	SmtpChainTest::wait_until(sub { my @f = $self->files; @f >= $n }, $timeout || 15);
	return $self->messages;
}

sub stop {
	my ($self) = @_;
	return $self->{status} if exists $self->{status};
	$self->{status} = SmtpChainTest::stop_pid($self->{pid}, 'TERM', 10);
	return $self->{status};
}

# ===========================================================================
package SmtpChainTest::Client;

# A raw SMTP client: sends bytes exactly as given, reads replies line by line
# with a deadline, notices when the server closes.  Everything received is
# kept in {transcript}.

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use IO::Select;
use IO::Socket::IP;
use Time::HiRes qw(time sleep);

sub new {
	my ($class, %o) = @_;
	my %a = (PeerHost => $o{host} || '127.0.0.1', PeerPort => $o{port},
	    Proto => 'tcp', Timeout => $o{connect_timeout} || 10);
	$a{LocalHost} = $o{local_addr} if $o{local_addr};
	my $sock = IO::Socket::IP->new(%a) or return undef;
	binmode $sock;
	$sock->autoflush(1);
	return bless { sock => $sock, buf => '', eof => 0, transcript => '',
	    timeout => ($o{timeout} || 15) * $SmtpChainTest::TIME_SCALE }, $class;
}

sub socket { $_[0]{sock} }
sub local_port { $_[0]{sock}->sockport }

# Send bytes as they are; false if the connection is gone.
sub send {
	my ($self, $bytes) = @_;
	my $sock = $self->{sock} or return 0;
	my $off = 0;
	my $deadline = time + $self->{timeout} * 4;
	my $sel = IO::Select->new($sock);
	while ($off < length $bytes) {
		return 0 if time > $deadline;
		next unless $sel->can_write(1);
		my $n = syswrite($sock, $bytes, 1 << 20 < length($bytes) - $off ? 1 << 20 : length($bytes) - $off, $off);
		if (!defined $n) {
			next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
			return 0;
		}
		$off += $n;
	}
	return 1;
}

# A command line: text plus CRLF.
sub cmd_send { $_[0]->send("$_[1]\r\n") }

# Send a command line and read its reply.
sub cmd {
	my ($self, $line) = @_;
	$self->cmd_send($line);
	return $self->read_reply;
}

# Read more bytes into the buffer, waiting at most until deadline.  Returns
# bytes read, 0 on EOF, undef on timeout.
sub _fill {
	my ($self, $deadline) = @_;
	return 0 if $self->{eof};
	my $sock = $self->{sock} or return 0;
	my $sel = IO::Select->new($sock);
	for (1 .. 100000) {
		my $left = $deadline - time;
		return undef if $left <= 0;
		next unless $sel->can_read($left > 1 ? 1 : $left);
		my $n = sysread($sock, my $chunk, 65536);
		if (!defined $n) {
			next if $! == EINTR || $! == EAGAIN;
			$self->{eof} = 1;	# ECONNRESET and the like
			return 0;
		}
		if ($n == 0) {
			$self->{eof} = 1;
			return 0;
		}
		$self->{buf} .= $chunk;
		$self->{transcript} .= $chunk;
		return $n;
	}
	return undef;
}

# One line (with its line end, CRLF or a bare LF as sent), or undef on
# EOF/timeout with {eof}/{timed_out} telling which.
sub read_line {
	my ($self, $timeout) = @_;
	my $deadline = time + ($timeout ? $timeout * $SmtpChainTest::TIME_SCALE : $self->{timeout});
	$self->{timed_out} = 0;
	for (1 .. 100000) {
		if ($self->{buf} =~ s/\A([^\n]*\n)//) {
			return $1;
		}
		my $n = $self->_fill($deadline);
		if (!defined $n) { $self->{timed_out} = 1; return undef }
		if ($n == 0) { return undef }
	}
	return undef;
}

# One complete reply: { code, enh, lines => [without CRLF], raw, text },
# or { eof => 1 } / { timeout => 1 } (with what was read of it in raw).
# A line that is not "ddd[- ]text" gives { code => undef, bad => 1 }.
sub read_reply {
	my ($self, $timeout) = @_;
	my %r = (lines => [], raw => '');
	for (1 .. 10000) {
		my $l = $self->read_line($timeout);
		if (!defined $l) {
			$r{ $self->{timed_out} ? 'timeout' : 'eof' } = 1;
			return \%r;
		}
		$r{raw} .= $l;
		(my $t = $l) =~ s/\r?\n\z//;
		push @{ $r{lines} }, $t;
		if ($t =~ /^(\d{3})([ -]|\z)(.*)/s) {
			my ($code, $sep, $text) = ($1, $2, $3);
			$r{code} //= $code;
			$r{bad} = 1 if $code != $r{code};
			$r{enh} //= $1 if $text =~ /^([245]\.\d{1,3}\.\d{1,3})(?: |\z)/;
			$r{text} = defined $r{text} ? "$r{text}\n$text" : $text;
			return \%r if $sep ne '-';
		} else {
			$r{bad} = 1;
			$r{code} = undef;
			return \%r;
		}
	}
	return \%r;
}

# Whether the server closes the connection within timeout seconds (anything
# it sends meanwhile is kept in {transcript}).
sub wait_closed {
	my ($self, $timeout) = @_;
	my $deadline = time + ($timeout || 10) * $SmtpChainTest::TIME_SCALE;
	for (1 .. 100000) {
		return 1 if $self->{eof};
		my $n = $self->_fill($deadline);
		return 1 if defined $n && $n == 0;
		return 0 unless defined $n;
		$self->{buf} = '';
	}
	return 0;
}

# EHLO, returning the reply.
sub ehlo { $_[0]->cmd('EHLO ' . ($_[1] || 'client.test')) }

# MAIL, each RCPT, DATA without pipelining; stops at the first failure.
# Returns a hash of replies: mail, rcpt => [...], data (those not reached
# are absent) and ok => 1 when DATA got its 354.
sub begin_data {
	my ($self, %o) = @_;
	my %r;
	my $params = defined $o{mail_params} ? " $o{mail_params}" : '';
	$r{mail} = $self->cmd("MAIL FROM:<$o{from}>$params");
	return \%r unless $r{mail}{code} && $r{mail}{code} == 250;
	my $any;
	for my $to (ref $o{to} ? @{ $o{to} } : $o{to}) {
		my $rr = $self->cmd("RCPT TO:<$to>");
		push @{ $r{rcpt} }, $rr;
		$any ||= $rr->{code} && $rr->{code} == 250;
	}
	return \%r unless $any;
	$r{data} = $self->cmd('DATA');
	$r{ok} = $r{data}{code} && $r{data}{code} == 354;
	return \%r;
}

# A whole transaction (begin_data), then the message (data: CRLF lines,
# dot-stuffed here; raw_data: sent as it is) and the end of data.  Returns
# begin_data's hash plus end, the reply to the end of data.
sub send_mail {
	my ($self, %o) = @_;
	my $r = $self->begin_data(%o);
	return $r unless $r->{ok};
	my $msg = $o{raw_data} // SmtpChainTest::dot_stuff($o{data});
	$self->send($msg . ".\r\n");
	$r->{end} = $self->read_reply;
	return $r;
}

sub quit {
	my ($self) = @_;
	my $r = $self->cmd('QUIT');
	$self->close;
	return $r;
}

sub close {
	my ($self) = @_;
	if ($self->{sock}) {
		close $self->{sock};
		$self->{sock} = undef;
		$self->{eof} = 1;
	}
}

# A reply as text for diagnostics.
sub describe {
	my ($r) = @_;
	return 'nothing' unless $r;
	return 'connection closed' . ($r->{raw} ? " after '$r->{raw}'" : '') if $r->{eof};
	return 'no reply in time' . ($r->{raw} ? " after '$r->{raw}'" : '') if $r->{timeout};
	(my $s = $r->{raw}) =~ s/\r\n/\\r\\n/g;
	return "'$s'";
}

1;
