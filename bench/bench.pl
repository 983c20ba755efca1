#!/usr/bin/perl
# bench.pl - the smtpchain benchmark: smtp-source -> X -> smtp-sink on
# loopback, side by side in one run, for
#
#   direct    no proxy: smtp-source straight into smtp-sink
#   empty     smtpchain, no filter
#   empty-w1  the same with workers = 1 (beside the default, one per CPU)
#   regex     smtpchain, the regex module with bench/header_checks and
#             bench/body_checks (a realistic set of about 50 rules)
#   milter    smtpchain, the milter module with a real OpenDKIM signing
#             (over TCP; milter-unix: over a unix socket)
#   policy    smtpchain, the policy module asking bench/policy-dunno.pl (a
#             trivial policy server answering DUNNO) at every RCPT; its CPU
#             is in the milter column, its connection count in the notes
#   postfix   Postfix (a private instance) relaying, the same OpenDKIM milter
#             (postfix-unix: over a unix socket)
#   nullmilter  smtpchain, the milter module with a null milter that adds one
#             header (t/milter/testmilter; nullmilter-unix: unix socket): the
#             milter protocol's own cost, two replies at end of message
#   haraka    Haraka 3 with queue/smtp_forward (npm package, installed here
#             into BENCH_CACHE; skipped with a line saying why if npm fails)
#   haraka-nodelay  the same Haraka with TCP_NODELAY on every socket
#             (bench/nodelay-shim.c, LD_PRELOAD): Haraka without the
#             delayed-ACK stall that Nagle gives it
#   haproxy   HAProxy in TCP mode (as many threads as smtpchain has workers):
#             a byte relay that parses nothing, the floor of what any proxy
#             in the middle costs (skipped when haproxy is not installed)
#
# Workloads (smtp-source -f bench@example.test -t rcpt@example.org):
#   par4k     20 parallel sessions of 4 KiB messages (-s 20 -l 4096)
#   seq4k     one session, messages one after the other (-s 1 -d): latency
#   1mib      1 MiB messages, 4 parallel sessions
#   text      1 MiB messages of generated text (words, URLs, an HTML part;
#             smtp-source -F), 4 parallel sessions: what body rules meet in
#             real mail, not smtp-source's lines of "X" (direct, haproxy,
#             empty and regex)
#   idle      10,000 idle sessions: proxy RSS per session (smtpchain, haraka)
#   big       one 30 MB message through the regex chain's body_checks: the
#             proxy's peak RSS (VmHWM)
#
# For each (system, workload) it runs BENCH_RUNS times (default 3) and
# reports min and median messages/s (until the sink has every message),
# the ratio of the median to direct's, CPU seconds per 1,000 messages of
# the proxy (its whole process tree: workers, Postfix's daemons, Haraka's
# cluster; from /proc/PID/stat utime+stime+cutime+cstime), of smtp-sink and
# of the milter, and the peak RSS (VmHWM, summed over the tree, reset before
# each run through /proc/PID/clear_refs).  A table on stdout, DIR/bench.csv
# (one row per system and workload), DIR/bench-runs.csv (every run) and,
# when gnuplot is there, DIR/bench.png.
#
# Usage: bench/run.sh [--quick] [--out DIR] [--systems a,b] [--workloads a,b]
#   --quick   a short smoke run: small counts, one run each
# Environment: BENCH_RUNS, BENCH_SYSTEMS, BENCH_WORKLOADS, BENCH_WORKERS
# (smtpchain workers and Haraka nodes, when the daemon has "workers"; default
# the number of CPUs), BENCH_PAR_MSGS, BENCH_SEQ_MSGS, BENCH_1M_MSGS, BENCH_TEXT_MSGS,
# BENCH_IDLE, BENCH_BIG_MB, BENCH_CACHE (default /var/tmp/smtpchain-bench),
# BENCH_NO_INSTALL=1 (never run npm), BENCH_BASELINE=DIR (an older build
# tree run side by side as empty-base and regex-base: before/after numbers),
# BENCH_POLICY_SPLIT=1 (the policy server writes each answer in two writes:
# the delayed-ACK case), BENCH_POLICY_STEPS (the policy block's steps, e.g.
# '[]' to measure holding the message without asking).
#
# Nothing is timed against a target here: the numbers are for people.  Every
# process is started by the harness (t/lib/SmtpChainTest.pm) or here, and
# stopped by pid at the end; every wait and every external command is
# bounded in time.
use strict;
use warnings;
use feature 'state';

BEGIN { $ENV{SMTPCHAIN_WATCHDOG} ||= 3 * 3600; }
use SmtpChainTest;
use File::Path qw(make_path);
use Getopt::Long;
use IO::Poll qw(POLLIN POLLERR POLLHUP);
use IO::Socket::IP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

Test::More->builder->no_ending(1);	# the harness is Test::More based; we run no tests
$| = 1;

my %opt = (quick => 0);
GetOptions(\%opt, 'quick', 'out=s', 'systems=s', 'workloads=s', 'runs=i')
    or die "usage: bench/run.sh [--quick] [--out DIR] [--systems LIST] [--workloads LIST] [--runs N]\n";
my $Q = $opt{quick};

my $SRC = $ENV{SMTPCHAIN_SRCDIR} or die "SMTPCHAIN_SRCDIR is not set (use bench/run.sh)\n";
my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} or die "SMTPCHAIN_BUILDDIR is not set (use bench/run.sh)\n";
my $BIN = $ENV{SMTPCHAIN} or die "SMTPCHAIN is not set\n";
my $OUT = $opt{out} || "$BUILD/bench-results";
make_path($OUT);
my $RUNS = $opt{runs} || $ENV{BENCH_RUNS} || ($Q ? 1 : 3);
my $CACHE = $ENV{BENCH_CACHE} || '/var/tmp/smtpchain-bench';
my $NCPU = () = (slurp('/proc/cpuinfo') // '') =~ /^processor\s*:/mg;
$NCPU ||= 1;

# Counts per workload: [sessions, messages, length, smtp-source extra flags].
my %WL = (
	par4k => { s => 20, m => $ENV{BENCH_PAR_MSGS} || ($Q ? 100 : 2000), l => 4096,
		   what => '20 parallel sessions, 4 KiB messages' },
	seq4k => { s => 1, m => $ENV{BENCH_SEQ_MSGS} || ($Q ? 20 : 300), l => 4096, flags => ['-d'],
		   what => 'one session, 4 KiB messages in sequence (latency)' },
	'1mib' => { s => 4, m => $ENV{BENCH_1M_MSGS} || ($Q ? 4 : 40), l => 1 << 20,
		   what => '4 parallel sessions, 1 MiB messages' },
	idle  => { n => $ENV{BENCH_IDLE} || ($Q ? 200 : 10000),
		   what => 'idle sessions: RSS per session' },
	big   => { s => 1, m => 1, l => ($ENV{BENCH_BIG_MB} || ($Q ? 3 : 30)) * 1000 * 1000,
		   what => 'one big message through body_checks: peak RSS' },
	text  => { s => 4, m => $ENV{BENCH_TEXT_MSGS} || ($Q ? 4 : 40), l => 1 << 20, text => 1,
		   what => '4 parallel sessions, 1 MiB messages of text, URLs and HTML' },
);
my @WORKLOADS = split /,/, $opt{workloads} || $ENV{BENCH_WORKLOADS} || 'par4k,seq4k,1mib,text,idle,big';
my @SYSTEMS = split /,/, $opt{systems} || $ENV{BENCH_SYSTEMS} ||
    'direct,haproxy,empty,empty-w1,regex,nullmilter,nullmilter-unix,milter,milter-unix,policy,' .
    'postfix,postfix-unix,haraka,haraka-nodelay';
# Which systems a workload is run for (idle and big only where they mean something;
# text is for the regex chain, with its references).
my %WL_SYSTEMS = (idle => { empty => 1, regex => 1, haraka => 1 }, big => { regex => 1, milter => 1 },
    text => { direct => 1, haproxy => 1, empty => 1, regex => 1 });
for (@WORKLOADS) { die "unknown workload $_\n" unless $WL{$_} }

# Our files in the harness's t/tmp/NAME (NAME from $0): one directory per
# run, so a smoke test and a full run in the same build tree do not meet.
$0 = "bench.$$";
my $dir = tmpdir();
my $CLK = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

note_line("smtpchain benchmark: " . scalar(localtime) . ", $NCPU CPUs, load " .
    (split(' ', slurp('/proc/loadavg') // '?'))[0] . ", runs $RUNS" . ($Q ? ' (quick)' : ''));
note_line("files: $dir; results: $OUT");

# ---------------------------------------------------------------------------
# /proc helpers

# Every pid whose parent is in the tree rooted at root (root included).
sub tree_pids {
	my (@roots) = @_;
	my %kids;
	opendir(my $d, '/proc') or return @roots;
	for my $p (grep { /^\d+\z/ } readdir $d) {
		my $s = slurp("/proc/$p/stat") // next;
		push @{ $kids{$1} }, $p if $s =~ /\) \S+ (\d+) /s;
	}
	closedir $d;
	my @all;
	my @todo = grep { defined } @roots;
	my %seen;
	while (@todo) {
		my $p = shift @todo;
		next if $seen{$p}++;
		push @all, $p;
		push @todo, @{ $kids{$p} || [] };
	}
	return @all;
}

# CPU seconds of a process tree: utime+stime of each, plus cutime+cstime
# (children already reaped), from /proc/PID/stat.
sub tree_cpu {
	my (@roots) = @_;
	my $t = 0;
	for my $p (tree_pids(@roots)) {
		my $s = slurp("/proc/$p/stat") // next;
		$s =~ s/\A.*\) //s;
		my @f = split ' ', $s;		# f[0] is field 3 (state)
		$t += $f[11] + $f[12] + $f[13] + $f[14];
	}
	return $t / $CLK;
}

# Sum of a /proc/PID/status field (VmRSS, VmHWM) in kB over a process tree.
sub tree_mem {
	my ($field, @roots) = @_;
	my $kb = 0;
	for my $p (tree_pids(@roots)) {
		my $s = slurp("/proc/$p/status") // next;
		$kb += $1 if $s =~ /^\Q$field\E:\s+(\d+)\s+kB/m;
	}
	return $kb;
}

# Reset the peak RSS (VmHWM) of every process of a tree to its current RSS.
sub reset_hwm {
	my (@roots) = @_;
	for my $p (tree_pids(@roots)) {
		open(my $fh, '>', "/proc/$p/clear_refs") or next;
		print $fh "5\n";
		close $fh;
	}
}

sub note_line { print "# @_\n" }

# ---------------------------------------------------------------------------
# smtp-sink: one for everything, counting messages (-c), not storing them

my $sink_port = free_port();
my $sink_out = "$dir/sink.out";
my $sink_bin = SmtpChainTest::find_program('smtp-sink') or die "smtp-sink not found (apt-get install postfix)\n";
my $source_bin = SmtpChainTest::find_program('smtp-source') or die "smtp-source not found (apt-get install postfix)\n";
# -m: more simultaneous sessions than the idle workload opens (default 256),
# -t: idle sessions outlive the measurement (default 100 s).
my $sink_pid = SmtpChainTest::spawn(argv => [$sink_bin, ($> == 0 ? ('-u', 'nobody') : ()), '-c',
    '-m', $WL{idle}{n} + 2000, '-t', 3600, '-h', 'sink.bench', "127.0.0.1:$sink_port", 4096],
    output => $sink_out);
SmtpChainTest::on_cleanup("sink $sink_pid", sub { SmtpChainTest::stop_pid($sink_pid, 'TERM', 10) });
wait_until(sub { SmtpChainTest::port_listening($sink_port) }, 10) or die "smtp-sink did not come up\n";

# Messages the sink has received so far (its -c counter, "mesg=N").
sub sink_count {
	open(my $fh, '<:raw', $sink_out) or return 0;
	my $size = -s $fh;
	seek($fh, $size > 256 ? $size - 256 : 0, 0);
	read($fh, my $t, 256);
	close $fh;
	my @n = ($t // '') =~ /mesg=(\d+)/g;
	return @n ? $n[-1] : 0;
}

# ---------------------------------------------------------------------------
# The systems under test: each start sub returns { port, pids => [tree
# roots charged as the proxy], milter => [pids] } or a string saying why not.

our $SUFFIX = '';	# file names of a baseline proxy (BENCH_BASELINE)
my %MODULE = map { $_ => "$BUILD/filters/$_/.libs/$_.so" } qw(regex milter policy);
my (%dkim, $dkim_why);

# Whether the daemon $ENV{SMTPCHAIN} takes this config text (keys that newer
# versions have: workers, limits.max_connections_per_client), memoized.
my %KNOWS;
sub daemon_knows {
	my ($text) = @_;
	my $bin = $ENV{SMTPCHAIN};
	return $KNOWS{"$bin\0$text"} //= do {
		my $c = spew("$dir/probe-key.conf", qq{listen = "127.0.0.1:1";\nbackend = "127.0.0.1:2";\n$text\n});
		system("$bin -t -c $c >/dev/null 2>&1") == 0 ? 1 : 0;
	};
}
our $WORKERS = $ENV{BENCH_WORKERS} || (daemon_knows('workers = 2;') ? $NCPU : 1);
note_line("smtpchain workers: " . ($WORKERS > 1 ? $WORKERS : 'none (single process)'));

# The smtpchain config for a bench system with this filter text.
sub proxy_conf {
	my ($filters, $backend_port) = @_;
	$backend_port ||= $sink_port;
	return qq{backend = "127.0.0.1:$backend_port";\nhostname = "proxy.bench";\n} .
	    (daemon_knows("workers = $WORKERS;") ? "workers = $WORKERS;\n" : '') .
	    # Every bench client comes from 127.0.0.1: no per-client cap.
	    "limits { max_connections = 30000; max_message_size = 0; " .
	    (daemon_knows('limits { max_connections_per_client = 0; }')
		? 'max_connections_per_client = 0; ' : '') . "}\n" .
	    "timeout { shutdown = 5; }\nspool_dir = \"$dir\";\nquarantine_dir = \"$dir\";\n" . $filters;
}

# OpenDKIM in signing mode (one per kind of socket, inet or unix, for the
# milter and postfix systems); returns { port or path, socket, pid }.
sub start_opendkim {
	my ($kind) = @_;
	$kind ||= 'inet';
	return $dkim{$kind} if $dkim{$kind} || $dkim_why;
	my $bin = SmtpChainTest::find_program('opendkim');
	my $gen = SmtpChainTest::find_program('opendkim-genkey');
	unless ($bin && $gen) {
		$dkim_why = 'opendkim/opendkim-genkey missing (apt-get install opendkim opendkim-tools)';
		return undef;
	}
	-f "$dir/bench.private" or system($gen, '-D', $dir, '-d', 'example.test', '-s', 'bench', '-b',
	    ($Q ? '1024' : '2048')) == 0 or do { $dkim_why = 'opendkim-genkey failed'; return undef };
	my $port = $kind eq 'inet' ? free_port() : undef;
	my $path = "$dir/opendkim.sock";
	my $socket = $kind eq 'inet' ? "inet:127.0.0.1:$port" : "unix:$path";
	# UMask 0: Postfix's smtpd (user postfix) connects to the unix socket too.
	my $conf = spew("$dir/opendkim-$kind.conf", "Syslog no\nBackground no\nRequireSafeKeys false\n" .
	    "Socket " . ($kind eq 'inet' ? "inet:$port\@127.0.0.1" : "local:$path") . "\nUMask 000\n" .
	    "PidFile $dir/opendkim-$kind.pid\nMode s\n" .
	    "Domain example.test\nSelector bench\nKeyFile $dir/bench.private\n" .
	    "Canonicalization relaxed/relaxed\n");
	my $pid = SmtpChainTest::spawn(argv => [$bin, '-f', '-x', $conf], output => "$dir/opendkim-$kind.log");
	SmtpChainTest::on_cleanup("opendkim $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 10) });
	my $up = sub { $kind eq 'inet' ? SmtpChainTest::port_listening($port) : -S $path };
	wait_until(sub { $up->() || !proc_alive($pid) }, 15);
	unless ($up->()) {
		$dkim_why = 'opendkim did not start: ' . (slurp("$dir/opendkim-$kind.log") // '');
		return undef;
	}
	$dkim{$kind} = { socket => $socket, pid => $pid };
	return $dkim{$kind};
}

# The null milter (t/milter/testmilter: one trace header, two replies at end
# of message), on TCP or a unix socket; returns { socket, pid } or a reason.
sub start_nullmilter {
	my ($kind) = @_;
	my $bin = "$BUILD/t/milter/testmilter";
	return "$bin is not built (make check builds it)" unless -x $bin;
	my $port = $kind eq 'inet' ? free_port() : undef;
	my $path = "$dir/nullmilter.sock";
	my $socket = $kind eq 'inet' ? "inet:127.0.0.1:$port" : "unix:$path";
	my $pid = SmtpChainTest::spawn(argv => [$bin, '-p', $kind eq 'inet' ? "inet:$port\@127.0.0.1" :
	    "unix:$path", '-n', 'null'], output => "/dev/null");
	SmtpChainTest::on_cleanup("nullmilter $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 10) });
	my $up = sub { $kind eq 'inet' ? SmtpChainTest::port_listening($port) : -S $path };
	wait_until(sub { $up->() || !proc_alive($pid) }, 15);
	return 'the null milter did not start' unless $up->();
	return { socket => $socket, pid => $pid };
}

# One message through port into a storing sink, to check that the chain
# does what it should (a DKIM-Signature for the milter); returns the
# delivered text or undef.
sub probe_message {
	my ($filters, $re) = @_;
	state $n = 0;
	$n++;	# a sink and proxy of their own each: not an earlier probe's message
	my $probe = start_sink(name => "probe$n", verbose => 0);
	(my $conf = proxy_conf($filters)) =~ s/127\.0\.0\.1:$sink_port/127.0.0.1:${\ $probe->port}/;
	my $p = start_proxy($conf, name => "probe$n");
	my $c = smtp_connect($p->port, timeout => 30) or return undef;
	$c->read_reply;
	$c->ehlo('client.test');
	$c->send_mail(from => 'bench@example.test', to => ['rcpt@example.org'],
	    data => make_message(from => 'bench@example.test', to => 'rcpt@example.org', subject => 'bench probe'));
	$c->quit;
	my ($m) = $probe->wait_find(qr/bench probe/, 20);
	$p->stop;
	$probe->stop;
	return $m && $m->{message} =~ $re ? $m->{message} : undef;
}

my %START = (
	direct => sub { return { port => $sink_port, pids => [] } },
	empty => sub {
		my $p = start_proxy(proxy_conf(''), name => "empty$SUFFIX");
		return { port => $p->port, pids => [$p->pid], filters => '', bin => $ENV{SMTPCHAIN},
		    name => "empty$SUFFIX" };
	},
	regex => sub {
		return "$MODULE{regex} is not built" unless -f $MODULE{regex};
		my $f = "filter {\n\tmodule = \"$MODULE{regex}\";\n" .
		    "\theader_checks = \"$SRC/bench/header_checks\";\n" .
		    "\tbody_checks = \"$SRC/bench/body_checks\";\n}\n";
		my $p = start_proxy(proxy_conf($f), name => "regex$SUFFIX");
		return { port => $p->port, pids => [$p->pid], filters => $f, bin => $ENV{SMTPCHAIN},
		    name => "regex$SUFFIX" };
	},
	milter => sub { start_milter_system('inet', 'milter') },
	'milter-unix' => sub { start_milter_system('unix', 'milter-unix') },
	nullmilter => sub { start_milter_system('inet', 'nullmilter') },
	'nullmilter-unix' => sub { start_milter_system('unix', 'nullmilter-unix') },
	policy => sub {
		return "$MODULE{policy} is not built" unless -f $MODULE{policy};
		my $port = free_port();
		my $stats = "$dir/policy-dunno.stats";
		my $pid = SmtpChainTest::spawn(argv => ['perl', "$SRC/bench/policy-dunno.pl", $port, $stats,
		    $ENV{BENCH_POLICY_SPLIT} ? '--split' : ()], output => "$dir/policy-dunno.log");
		SmtpChainTest::on_cleanup("policy-dunno $pid", sub {
			SmtpChainTest::stop_pid($pid, 'TERM', 10);
			note_line("policy server: " . (slurp($stats) // "no stats\n"));
		});
		wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
		return 'the policy server did not start: ' . (slurp("$dir/policy-dunno.log") // '')
		    unless SmtpChainTest::port_listening($port);
		my $f = "filter {\n\tmodule = \"$MODULE{policy}\";\n\tserver = \"inet:127.0.0.1:$port\";\n" .
		    "\tidle_connections = 64;\n" .
		    ($ENV{BENCH_POLICY_STEPS} ? "\tsteps = $ENV{BENCH_POLICY_STEPS};\n" : '') . "}\n";
		probe_message($f, qr/bench probe/)
		    or return 'a message through the policy chain did not come out';
		my $p = start_proxy(proxy_conf($f), name => 'policy');
		return { port => $p->port, pids => [$p->pid], milter => [$pid] };
	},
	postfix => sub { start_postfix_system('inet', 'postfix') },
	'postfix-unix' => sub { start_postfix_system('unix', 'postfix-unix') },
	haraka => sub { start_haraka('haraka') },
	'haraka-nodelay' => sub { start_haraka('haraka-nodelay') },
	haproxy => \&start_haproxy,
);
# The empty chain with one worker, beside the default (one per CPU).
$START{'empty-w1'} = sub {
	local $WORKERS = 1;
	local $SUFFIX = '-w1';
	my $sys = $START{empty}->();
	return $sys;
};

# smtpchain with OpenDKIM (milter) or the null milter, on kind's socket.
sub start_milter_system {
	my ($kind, $name) = @_;
	return "$MODULE{milter} is not built" unless -f $MODULE{milter};
	my $null = $name =~ /^null/;
	my $d = $null ? start_nullmilter($kind) : start_opendkim($kind) // $dkim_why;
	return $d unless ref $d;
	my $f = "filter {\n\tmodule = \"$MODULE{milter}\";\n\tsocket = \"$d->{socket}\";\n" .
	    "\tdefault_action = \"tempfail\";\n}\n";
	my $want = $null ? qr/^X-Testmilter-null: /m : qr/^DKIM-Signature: v=1;/m;
	probe_message($f, $want) or return 'a message through the milter chain came out without ' .
	    ($null ? 'the null milter\'s header' : 'a DKIM-Signature');
	my $p = start_proxy(proxy_conf($f), name => $name);
	return { port => $p->port, pids => [$p->pid], milter => [$d->{pid}] };
}

# Postfix with OpenDKIM on kind's socket.
sub start_postfix_system {
	my ($kind, $name) = @_;
	{
		return 'a private Postfix needs root' unless $> == 0;
		my $d = start_opendkim($kind) or return $dkim_why;
		my $pf = start_postfix(name => $name, relay_port => $sink_port,
		    main => "smtpd_milters = $d->{socket}\nmilter_default_action = tempfail\n" .
			"milter_protocol = 6\nsmtp_connection_cache_on_demand = yes\n" .
			"message_size_limit = 0\n");
		return { port => $pf->port, pids => [$pf->master_pid], milter => [$d->{pid}], postfix => $pf };
	}
}

# HAProxy relaying TCP to the sink, threads as the proxy's workers.
sub start_haproxy {
	my $bin = SmtpChainTest::find_program('haproxy') or return 'haproxy is not installed (apt-get install haproxy)';
	my $port = free_port();
	my $conf = spew("$dir/haproxy.cfg", "global\n\tmaxconn 4000\n\tnbthread $WORKERS\n" .
	    "defaults\n\tmode tcp\n\ttimeout connect 10s\n\ttimeout client 300s\n\ttimeout server 300s\n" .
	    "listen relay\n\tbind 127.0.0.1:$port\n\tserver sink 127.0.0.1:$sink_port\n");
	my $pid = SmtpChainTest::spawn(argv => [$bin, '-db', '-f', $conf], output => "$dir/haproxy.log");
	SmtpChainTest::on_cleanup("haproxy $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 10) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	return 'haproxy did not start: ' . (slurp("$dir/haproxy.log") // '')
	    unless SmtpChainTest::port_listening($port);
	return { port => $port, pids => [$pid] };
}

# BENCH_BASELINE=DIR: a build tree of an older smtpchain (DIR/proxy/smtpchain
# and DIR/filters/*/.libs/*.so) run side by side as empty-base and
# regex-base, for before/after numbers from one run.
if (my $base = $ENV{BENCH_BASELINE}) {
	die "BENCH_BASELINE: $base/proxy/smtpchain is not there\n" unless -x "$base/proxy/smtpchain";
	for my $which (grep { my $w = $_; grep { $_ eq $w } @SYSTEMS } qw(empty regex)) {
		$START{"$which-base"} = sub {
			local $ENV{SMTPCHAIN} = "$base/proxy/smtpchain";
			local $MODULE{regex} = "$base/filters/regex/.libs/regex.so";
			local $SUFFIX = '-base';
			my $sys = $START{$which}->();
			return $sys;
		};
		$WL_SYSTEMS{$_}{"$which-base"} = 1 for grep { $WL_SYSTEMS{$_}{$which} } keys %WL_SYSTEMS;
		push @SYSTEMS, "$which-base" unless grep { $_ eq "$which-base" } @SYSTEMS;
	}
}

# Haraka 3 with smtp_forward to the sink; installs the npm package into
# BENCH_CACHE/haraka the first time.  $name "haraka-nodelay": with
# bench/nodelay-shim.c preloaded (built here with cc).
sub start_haraka {
	my ($name) = @_;
	my $top = "$CACHE/haraka";
	my $haraka = "$top/node_modules/Haraka/bin/haraka";
	my $node = SmtpChainTest::find_program('node') || SmtpChainTest::find_program('nodejs');
	return 'node is not installed (apt-get install nodejs npm)' unless $node;
	unless (-f $haraka) {
		return "Haraka is not installed in $top and BENCH_NO_INSTALL is set" if $ENV{BENCH_NO_INSTALL};
		my $npm = SmtpChainTest::find_program('npm') or return 'npm is not installed (apt-get install npm)';
		make_path($top);
		note_line("installing Haraka 3 with npm into $top (once)");
		my $rc = system("cd '$top' && timeout -k 5 600 '$npm' install --no-audit --no-fund Haraka\@3 >install.log 2>&1");
		return "npm install Haraka\@3 failed or the registry is unreachable (see $top/install.log)"
		    if $rc != 0 || !-f $haraka;
	}
	my $version = (slurp("$top/node_modules/Haraka/package.json") // '') =~ /"version":\s*"([^"]+)"/ ? $1 : '?';
	my $cdir = "$dir/$name";
	my %env;
	if ($name eq 'haraka-nodelay') {
		my $cc = SmtpChainTest::find_program('cc') or return 'no C compiler for bench/nodelay-shim.c';
		my $so = "$dir/nodelay-shim.so";
		system("timeout -k 5 60 '$cc' -O2 -shared -fPIC -o '$so' '$SRC/bench/nodelay-shim.c' -ldl " .
		    ">'$dir/nodelay-shim.log' 2>&1") == 0
		    or return 'cannot build bench/nodelay-shim.c: ' . (slurp("$dir/nodelay-shim.log") // '');
		%env = (LD_PRELOAD => $so);
	}
	# Haraka's own default config directory (-i), then our settings over it.
	system("timeout -k 5 60 '$node' '$haraka' -i '$cdir' >'$dir/haraka-install.log' 2>&1") == 0
	    or return "haraka -i $cdir failed: " . (slurp("$dir/haraka-install.log") // '');
	my $port = free_port();
	spew("$cdir/config/plugins", "rcpt_to.in_host_list\nqueue/smtp_forward\n");
	spew("$cdir/config/host_list", "example.org\n");
	spew("$cdir/config/smtp.ini", "listen=127.0.0.1:$port\nnodes=" . ($WORKERS > 1 ? $WORKERS : 0) .
	    "\ninactivity_timeout=600\n");
	spew("$cdir/config/smtp_forward.ini", "host=127.0.0.1\nport=$sink_port\n");
	spew("$cdir/config/log.ini", "[main]\nlevel=warn\n");
	spew("$cdir/config/me", "haraka.bench\n");
	my $pid = SmtpChainTest::spawn(argv => [$node, $haraka, '-c', $cdir], env => \%env, output => "$cdir/haraka.log");
	SmtpChainTest::on_cleanup("haraka $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 15) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 30);
	return "Haraka did not start: " . (slurp("$cdir/haraka.log") // '')
	    unless SmtpChainTest::port_listening($port) && proc_alive($pid);
	note_line("$name $version on port $port");
	return { port => $port, pids => [$pid], haraka => $pid };
}

# ---------------------------------------------------------------------------
# Workloads

# A message of about $size bytes of text for smtp-source -F (written once):
# headers, then a multipart/alternative body with a text/plain part (words,
# sentences, URLs, a signature) and a text/html part (paragraphs, links,
# tables, an image tag), lines of 40-76 characters.  The same bytes in
# every run (fixed seed), so that the regex chain meets real-looking text
# and not only smtp-source's lines of "X".
my %TEXT_FILE;
sub text_message {
	my ($size) = @_;
	return $TEXT_FILE{$size} //= do {
		my @w = qw(the of and to in is you that it he was for on are as with his they
		    at be this have from or one had by word but not what all were we when your can
		    said there use an each which she do how their if will up other about out many
		    then them these so some her would make like him into time has look two more write
		    go see number no way could people my than first water been call who oil its now
		    find long down day did get come made may part invoice meeting report account
		    payment shipping order delivery password update schedule quarterly budget
		    customer support newsletter offer discount free click unsubscribe review);
		my @hosts = qw(example.com mail.example.org shop.example.net www.example.test
		    cdn.example.com news.example.org);
		my $rand = do { my $x = 15; sub { $x = ($x * 1103515245 + 12345) % 2147483648; $x % $_[0] } };
		my $word = sub { $w[$rand->(scalar @w)] };
		my $url = sub {
			"https://$hosts[$rand->(scalar @hosts)]/" . join('/', map { $word->() } 1 .. 1 + $rand->(3)) .
			    ($rand->(3) ? '' : '?id=' . $rand->(100000));
		};
		my $line = sub {
			my ($html) = @_;
			my $l = '';
			while (length $l < 40 + $rand->(36)) {
				my $k = $rand->(20);
				my $t = $k == 0 ? $url->() : $k == 1 && $html ? '<a href="' . $url->() . '">' . $word->() . '</a>'
				    : $k == 2 ? ucfirst($word->()) . '.' : $word->();
				$l .= ($l eq '' ? '' : ' ') . $t;
			}
			return "$l\n";
		};
		my $b = 'bench-text-boundary';
		my $m = "From: Bench Sender <bench\@example.test>\nTo: <rcpt\@example.org>\n" .
		    "Subject: Quarterly report and invoice\nMIME-Version: 1.0\n" .
		    "Content-Type: multipart/alternative; boundary=\"$b\"\n\n";
		my $half = $size / 2;
		$m .= "--$b\nContent-Type: text/plain; charset=utf-8\n\n";
		$m .= $line->(0) while length $m < $half;
		$m .= "-- \nBench Sender, https://www.example.test/\n\n--$b\nContent-Type: text/html; charset=utf-8\n\n" .
		    "<html><head><title>Report</title></head><body>\n";
		while (length $m < $size - 200) {
			my $k = $rand->(8);
			$m .= $k == 0 ? "<p>\n" : $k == 1 ? "</p>\n" :
			    $k == 2 ? "<table><tr><td>" . $word->() . "</td><td>" . $rand->(1000) . "</td></tr></table>\n" :
			    $k == 3 ? '<img src="' . $url->() . "\" alt=\"\">\n" : $line->(1);
		}
		$m .= "</body></html>\n--$b--\n";
		spew("$dir/text-$size.eml", $m);
	};
}

# smtp-source through sys; returns a hash of what was measured.
sub run_source {
	my ($sys, $w) = @_;
	my $limit = $Q ? 120 : 900;
	my $base = sink_count();
	my @roots = @{ $sys->{pids} };
	reset_hwm(@roots) if @roots;
	my $cpu0 = @roots ? tree_cpu(@roots) : 0;
	my $sink0 = tree_cpu($sink_pid);
	my $milter0 = $sys->{milter} ? tree_cpu(@{ $sys->{milter} }) : 0;
	my @c0 = POSIX::times();
	my $log = "$dir/source.log";
	my @body = $w->{text} ? ('-F', text_message($w->{l})) : ('-l', $w->{l});
	my @argv = ('timeout', '-k', '5', $limit, $source_bin, '-s', $w->{s}, '-m', $w->{m}, @body,
	    @{ $w->{flags} || [] }, '-f', 'bench@example.test', '-t', 'rcpt@example.org',
	    '-M', 'client.test', "127.0.0.1:$sys->{port}");
	my $t0 = time;
	my $pid = SmtpChainTest::spawn(argv => \@argv, output => $log);
	waitpid($pid, 0);
	my $st = $?;
	my $t_end = time;
	# Until the sink has them all (a queueing MTA delivers after its 250),
	# as long as the count moves: 30 s without progress ends the wait (3 s
	# when smtp-source failed), and so does an overall limit.
	my $deadline = time + $limit;
	my ($last, $moved) = (-1, time);
	while (time < $deadline) {
		my $n = sink_count() - $base;
		last if $n >= $w->{m};
		($last, $moved) = ($n, time) if $n != $last;
		last if time - $moved > ($st == 0 ? 30 : 3);
		sleep 0.005;
		$t_end = time;
	}
	my $got = sink_count() - $base;
	my @c1 = POSIX::times();
	my %r = (
		secs => $t_end - $t0,
		rate => $w->{m} / (($t_end - $t0) || 1e-6),
		sent => $w->{m}, delivered => $got,
		ok => ($st == 0 && $got == $w->{m}) ? 1 : 0,
		proxy_cpu => @roots ? tree_cpu(@roots) - $cpu0 : undef,
		sink_cpu => tree_cpu($sink_pid) - $sink0,
		milter_cpu => $sys->{milter} ? tree_cpu(@{ $sys->{milter} }) - $milter0 : undef,
		source_cpu => (($c1[3] + $c1[4]) - ($c0[3] + $c0[4])) / $CLK,
		hwm_kb => @roots ? tree_mem('VmHWM', @roots) : undef,
	);
	unless ($r{ok}) {
		my $l = slurp($log) // '';
		$l =~ s/\s+\z//;
		$l = substr($l, -300) if length $l > 300;
		note_line("  smtp-source exit " . ($st >> 8) . ", $got of $w->{m} delivered: $l");
	}
	unlink $log;
	return \%r;
}

# The backend for idle sessions: smtp-sink keeps its timers in a sorted list,
# so with thousands of open sessions every event costs it a walk of that list
# and 10,000 sessions take many minutes to open.  This child process only
# greets, answers every line with 250 (221 to QUIT) and holds connections,
# with poll(2): bounded by BENCH time and by its parent's life.
my $idle_backend;
sub idle_backend_port {
	return $idle_backend->{port} if $idle_backend;
	my $l = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 4096,
	    ReuseAddr => 1, Proto => 'tcp') or die "idle backend: listen: $@\n";
	my $port = $l->sockport;
	my $parent = $$;
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		$SIG{$_} = 'DEFAULT' for qw(TERM INT ALRM PIPE);
		alarm(7200);
		$l->blocking(0);
		my $poll = IO::Poll->new;
		$poll->mask($l => POLLIN);
		my %buf;
		while (getppid() == $parent) {
			next if $poll->poll(1) <= 0;
			for my $h ($poll->handles(POLLIN | POLLERR | POLLHUP)) {
				if ($h == $l) {
					for (1 .. 256) {
						my $c = $l->accept or last;
						$c->blocking(0);
						syswrite($c, "220 idle.bench ESMTP\r\n");
						$poll->mask($c => POLLIN);
						$buf{ fileno($c) } = '';
					}
					next;
				}
				my $fd = fileno($h);
				my $n = sysread($h, my $in, 4096);
				my $b = ($buf{$fd} // '') . ($n ? $in : '');
				my $quit = !$n;
				while (!$quit && $b =~ s/\A([^\n]*)\n//) {
					$quit = $1 =~ /^QUIT/i;
					syswrite($h, $quit ? "221 bye\r\n" : "250 idle.bench\r\n");
				}
				$buf{$fd} = substr($b, 0, 4096);
				if ($quit) {
					$poll->remove($h);
					delete $buf{$fd};
					close $h;
				}
			}
		}
		POSIX::_exit(0);
	}
	close $l;
	SmtpChainTest::on_cleanup("idle backend $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
	$idle_backend = { port => $port, pid => $pid };
	return $port;
}

# n idle sessions (greeted, then nothing) to sys; the proxy's RSS per session.
# An smtpchain system gets a proxy of its own for this, with the same
# filters in front of the idle backend above.
sub run_idle {
	my ($sys, $w) = @_;
	if (defined $sys->{filters}) {
		local $ENV{SMTPCHAIN} = $sys->{bin};
		my $p = start_proxy(proxy_conf($sys->{filters}, idle_backend_port()), name => "$sys->{name}-idle");
		my $r = run_idle({ port => $p->port, pids => [$p->pid] }, $w);
		$p->stop;
		return $r;
	}
	my @roots = @{ $sys->{pids} };
	return { ok => 0, why => 'no proxy' } unless @roots;
	my $n = $w->{n};
	# A proxy holds two descriptors per session (client and backend): stay
	# under its open-files limit, and say so.
	my $lim = (slurp("/proc/$roots[0]/limits") // '') =~ /^Max open files\s+(\d+)/m ? $1 : undef;
	if (defined $lim && 2 * $n + 100 > $lim) {
		my $cap = int(($lim - 100) / 2);
		note_line("  idle: $n sessions need more than the proxy's open-files limit ($lim): $cap instead" .
		    " (raise the hard limit, ulimit -Hn, for more)");
		$n = $cap;
	}
	my $settle = $Q ? 0.2 : 1;	# for the process to reach a steady RSS
	sleep $settle / 2;
	my $rss0 = tree_mem('VmRSS', @roots);
	reset_hwm(@roots);
	my $deadline = time + ($Q ? 60 : 600);
	my (@socks, $greeted);
	$greeted = 0;
	my $batch = 200;
	while (@socks < $n && time < $deadline) {
		my @new;
		for (1 .. ($n - @socks < $batch ? $n - @socks : $batch)) {
			my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $sys->{port},
			    Proto => 'tcp', Timeout => 10) or last;
			push @new, $s;
		}
		last unless @new;
		# Read each one's greeting (a 220 line), bounded.
		my $poll = IO::Poll->new;
		$poll->mask($_ => POLLIN) for @new;
		my %left = map { fileno($_) => $_ } @new;
		my $bdl = time + 30;
		while (%left && time < $bdl) {
			last if $poll->poll(1) < 0;
			for my $s ($poll->handles(POLLIN | POLLERR | POLLHUP)) {
				my $k = fileno($s);
				next unless $left{$k};
				my $r = sysread($s, my $buf, 512);
				$greeted++ if $r && $buf =~ /^220[ -]/;
				$poll->remove($s);
				delete $left{$k};
			}
		}
		push @socks, @new;
	}
	sleep $settle;
	my $rss1 = tree_mem('VmRSS', @roots);
	my $hwm = tree_mem('VmHWM', @roots);
	my $opened = @socks;
	close $_ for @socks;
	@socks = ();
	sleep $settle;
	my $per = $greeted ? ($rss1 - $rss0) / $greeted : undef;
	note_line(sprintf("  idle: %d opened, %d greeted, RSS %d -> %d kB: %s KiB per session",
	    $opened, $greeted, $rss0, $rss1, defined $per ? sprintf('%.1f', $per) : '?'));
	return { ok => ($greeted == $n ? 1 : 0), sent => $n, delivered => $greeted, n => $n,
	    idle_kb => $per, hwm_kb => $hwm };
}

# ---------------------------------------------------------------------------
# Main loop.  Every system is started first and stays up; then for each
# workload and each run, the systems take their turn one after the other.
# The machine may be shared (other builds, tests): interleaving spreads a
# burst of outside load over every system alike, so the ratios of one run
# stay fair, and the median over the runs drops the odd one out.

my (@rows, @runs_rows, %skipped, %SYS, @UP);
for my $name (@SYSTEMS) {
	my $start = $START{$name} or die "unknown system $name\n";
	next unless grep { !$WL_SYSTEMS{$_} || $WL_SYSTEMS{$_}{$name} } @WORKLOADS;
	my $sys = eval { $start->() };
	$sys = "start failed: $@" unless defined $sys;
	unless (ref $sys) {
		$sys =~ s/\s+\z//;
		note_line("SKIPPED $name: $sys");
		$skipped{$name} = $sys;
		next;
	}
	note_line("$name: port $sys->{port}" . (@{ $sys->{pids} } ? ", proxy pid @{ $sys->{pids} }" : ''));
	# A warm-up: the first connections of a fresh process cost more.
	run_source($sys, { s => 2, m => 10, l => 1024 }) unless $name eq 'direct';
	$SYS{$name} = $sys;
	push @UP, $name;
}

for my $wl (@WORKLOADS) {
	my $w = $WL{$wl};
	my @names = grep { !$WL_SYSTEMS{$wl} || $WL_SYSTEMS{$wl}{$_} } @UP;
	my %res;
	my $runs = $wl eq 'idle' || $wl eq 'big' ? 1 : $RUNS;
	for my $i (1 .. $runs) {
		for my $name (@names) {
			my $sys = $SYS{$name};
			my $r = $wl eq 'idle' ? run_idle($sys, $w) : run_source($sys, $w);
			push @{ $res{$name} }, $r;
			push @runs_rows, [$name, $wl, $i, map { $r->{$_} } qw(rate secs sent delivered ok
			    proxy_cpu sink_cpu milter_cpu source_cpu hwm_kb idle_kb)];
			note_line(sprintf("  %-7s %-6s run %d: %s", $name, $wl, $i, $wl eq 'idle'
			    ? sprintf('%s KiB/session', fmt($r->{idle_kb}, 1))
			    : sprintf('%.1f msg/s, %d/%d delivered, proxy cpu %s s, sink cpu %.2f s, peak RSS %s kB',
				$r->{rate}, $r->{delivered}, $r->{sent}, fmt($r->{proxy_cpu}, 2), $r->{sink_cpu},
				fmt($r->{hwm_kb}, 0))));
		}
	}
	push @rows, summarize($_, $wl, $res{$_}) for @names;
}

sub fmt {
	my ($v, $d) = @_;
	return defined $v ? sprintf("%.${d}f", $v) : '-';
}

sub median {
	my @v = sort { $a <=> $b } grep { defined } @_;
	return undef unless @v;
	return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub min_of {
	my @v = sort { $a <=> $b } grep { defined } @_;
	return $v[0];
}

sub max_of {
	my @v = sort { $b <=> $a } grep { defined } @_;
	return $v[0];
}

# One row of the table from the runs of one system and workload.
sub summarize {
	my ($name, $wl, $res) = @_;
	my $per = sub {
		my ($k) = @_;
		return median(map { defined $_->{$k} && $_->{sent} ? 1000 * $_->{$k} / $_->{sent} : undef } @$res);
	};
	return {
		system => $name, workload => $wl, runs => scalar @$res,
		messages => $res->[0]{sent},
		rate_min => min_of(map { $_->{rate} } @$res),
		rate_median => median(map { $_->{rate} } @$res),
		proxy_cpu_1000 => $per->('proxy_cpu'),
		sink_cpu_1000 => $per->('sink_cpu'),
		milter_cpu_1000 => $per->('milter_cpu'),
		source_cpu_1000 => $per->('source_cpu'),
		peak_rss_kb => max_of(map { $_->{hwm_kb} } @$res),
		idle_kb => median(map { $_->{idle_kb} } @$res),
		delivered_ok => (grep { !$_->{ok} } @$res) ? 0 : 1,
	};
}

# Ratios to direct, same workload, same run.
my %direct = map { $_->{workload} => $_->{rate_median} } grep { $_->{system} eq 'direct' } @rows;
for my $r (@rows) {
	my $d = $direct{ $r->{workload} };
	$r->{ratio_direct} = $d && defined $r->{rate_median} ? $r->{rate_median} / $d : undef;
	$r->{cpu_vs_sink} = $r->{proxy_cpu_1000} && $r->{sink_cpu_1000}
	    ? $r->{proxy_cpu_1000} / $r->{sink_cpu_1000} : undef;
}

# ---------------------------------------------------------------------------
# Output: table, CSV, chart

my @COLS = qw(system workload runs messages rate_min rate_median ratio_direct proxy_cpu_1000
    sink_cpu_1000 cpu_vs_sink milter_cpu_1000 source_cpu_1000 peak_rss_kb idle_kb delivered_ok);
my %DEC = (rate_min => 1, rate_median => 1, ratio_direct => 2, proxy_cpu_1000 => 3, sink_cpu_1000 => 3,
    cpu_vs_sink => 2, milter_cpu_1000 => 3, source_cpu_1000 => 3, peak_rss_kb => 0, idle_kb => 1);

sub cell {
	my ($r, $c) = @_;
	my $v = $r->{$c};
	return '' unless defined $v;
	return exists $DEC{$c} ? sprintf("%.$DEC{$c}f", $v) : $v;
}

open(my $csv, '>', "$OUT/bench.csv") or die "$OUT/bench.csv: $!\n";
print $csv join(',', @COLS), "\n";
for my $r (@rows) { print $csv join(',', map { cell($r, $_) } @COLS), "\n" }
close $csv;
open(my $rcsv, '>', "$OUT/bench-runs.csv") or die "$OUT/bench-runs.csv: $!\n";
print $rcsv "system,workload,run,rate,secs,sent,delivered,ok,proxy_cpu,sink_cpu,milter_cpu,source_cpu,hwm_kb,idle_kb\n";
print $rcsv join(',', map { defined $_ ? $_ : '' } @$_), "\n" for @runs_rows;
close $rcsv;

my @H = (['system', 10], ['workload', 8], ['msgs', 6], ['msg/s min', 10], ['msg/s med', 10], ['x direct', 8],
    ['cpu s/1k', 9], ['sink s/1k', 9], ['cpu/sink', 8], ['milter/1k', 9], ['peakRSS kB', 10],
    ['idle KiB', 8], ['all ok', 6]);
my @HC = qw(system workload messages rate_min rate_median ratio_direct proxy_cpu_1000 sink_cpu_1000
    cpu_vs_sink milter_cpu_1000 peak_rss_kb idle_kb delivered_ok);
print "\n";
print join(' ', map { sprintf("%-*s", $_->[1], $_->[0]) } @H), "\n";
for my $r (@rows) {
	print join(' ', map { sprintf("%-*s", $H[$_][1], cell($r, $HC[$_])) } 0 .. $#H), "\n";
}
print "\n";
note_line("skipped $_: $skipped{$_}") for sort keys %skipped;
note_line("CSV: $OUT/bench.csv (every run: $OUT/bench-runs.csv)");

# The chart: messages/s (median) per system, one panel per message workload.
my $gnuplot = SmtpChainTest::find_program('gnuplot');
my @panels = grep { my $w = $_; grep { $_->{workload} eq $w } @rows } qw(par4k seq4k 1mib);
if (!$gnuplot) {
	note_line('no chart: gnuplot is not installed (apt-get install gnuplot-nox)');
} elsif (@panels) {
	my $gp = "set terminal pngcairo size " . (420 * @panels) . ",420 font ',9'\n" .
	    "set output '$OUT/bench.png'\nset style fill solid 0.6 border -1\nset boxwidth 0.7\n" .
	    "set yrange [0:*]\nset xtics rotate by -30\nset grid ytics\nunset key\n" .
	    "set multiplot layout 1," . scalar(@panels) . " title 'smtpchain bench: messages/s (median of $RUNS), " .
	    "$NCPU CPUs'\n";
	for my $wl (@panels) {
		my @r = grep { $_->{workload} eq $wl && defined $_->{rate_median} } @rows;
		my $dat = "$OUT/bench-$wl.dat";
		spew($dat, join('', map { sprintf("%d \"%s\" %.2f %.2f\n", $_, $r[$_]{system},
		    $r[$_]{rate_median}, $r[$_]{ratio_direct} // 0) } 0 .. $#r));
		$gp .= "set title '$wl: $WL{$wl}{what}'\nset ylabel 'msg/s'\n" .
		    "plot '$dat' using 1:3:xtic(2) with boxes lc rgb '#4477aa', " .
		    "'' using 1:3:(sprintf('%.2fx', \$4)) with labels offset 0,0.7\n";
	}
	$gp .= "unset multiplot\n";
	spew("$OUT/bench.gp", $gp);
	if (system("timeout 60 $gnuplot $OUT/bench.gp >$OUT/gnuplot.log 2>&1") == 0) {
		note_line("chart: $OUT/bench.png");
	} else {
		note_line("gnuplot failed: " . (slurp("$OUT/gnuplot.log") // ''));
	}
}
exit((grep { !$_->{delivered_ok} } @rows) ? 1 : 0);
