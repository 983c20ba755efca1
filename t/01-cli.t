# 01-cli.t - the command line: -V, -h, -t on good and bad configs.
#
# Nothing listens here: only the exit status and what the daemon prints.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

my $bin = $ENV{SMTPCHAIN} or plan skip_all => 'SMTPCHAIN is not set (run through make check)';
my $dir = tmpdir();

# Run the daemon with arguments; (exit code, stdout, stderr).  Bounded by
# timeout(1) so a daemon that does not exit cannot hang the test.
sub run {
	my (@args) = @_;
	my ($out, $err) = ("$dir/run.out", "$dir/run.err");
	my $cmd = join(' ', 'timeout', '-k', '5', '20', map { quotemeta } $bin, @args);
	system("$cmd >$out 2>$err </dev/null");
	my $code = $? == -1 ? -1 : $? & 127 ? 128 + ($? & 127) : $? >> 8;
	return ($code, slurp($out) // '', slurp($err) // '');
}

my ($code, $out, $err);

($code, $out, $err) = run('-V');
is($code, 0, '-V exits 0');
is($out, "smtpchain 0.1.0\n", '-V prints the version');

($code, $out, $err) = run('-h');
is($code, 0, '-h exits 0');
like($out . $err, qr/usage:.*smtpchain/i, '-h prints a usage line');
like($out . $err, qr/-c\b/, 'the usage mentions -c');

($code, $out, $err) = run('-Z');
isnt($code, 0, 'an unknown option fails');

# A good config, every section used.
my $good = spew("$dir/good.conf", <<'EOF');
# a complete config
listen  = [ "127.0.0.1:10025", "[::1]:10025" ];
backend = "127.0.0.1:25";
hostname = "proxy.test";
log { level = "info"; transcript = false; syslog = false; }
timeout { command = 300; data = 600; backend = 300; connect = 30; shutdown = 30; }
limits { max_connections = 1000; max_message_size = 52428800; max_recipients = 1000; max_line_length = 512; }
ehlo {
    remove = [ "CHUNKING", "SMTPUTF8" ];
    add    = [ "X-EXAMPLE", "DELIVERBY 240" ];
    size   = 10485760;
}
xclient = true;  xforward = true;
EOF
($code, $out, $err) = run('-t', '-c', $good);
is($code, 0, '-t on a good config exits 0') or diag($err);

my $minimal = spew("$dir/minimal.conf", qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\n});
($code, $out, $err) = run('-t', '-c', $minimal);
is($code, 0, '-t on a minimal config (listen and backend only) exits 0') or diag($err);

my $sample = SmtpChainTest::srcdir() . '/conf/smtpchain.conf';
SKIP: {
	skip 'conf/smtpchain.conf is empty', 1 unless -s $sample;
	($code, $out, $err) = run('-t', '-c', $sample);
	is($code, 0, '-t on the shipped sample conf/smtpchain.conf exits 0') or diag($err);
}

# Bad configs: exit 1 and "FILE:LINE: message" naming the problem.
my @bad = (
	['unknown key', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\nbogus_key = 1;\n}, 3, qr/bogus_key/],
	['unknown key in a block', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\ntimeout {\n  command = 30;\n  kommand = 30;\n}\n}, 5, qr/kommand/],
	['bad backend address', qq{listen = "127.0.0.1:10025";\nbackend = "not an address";\n}, 2, qr/backend|address/i],
	['backend without a port', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1";\n}, 2, qr/backend|address|port/i],
	['bad listen address', qq{backend = "127.0.0.1:25";\n\nlisten = "999.1.1.1:25";\n}, 3, qr/listen|address/i],
	['wrong type: string for a number', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\nlimits { max_recipients = "many"; }\n}, 3, qr/max_recipients/],
	['wrong type: number for a boolean', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\n\nxclient = 7;\n}, 4, qr/xclient/],
	['wrong type: object for a string', qq{listen = "127.0.0.1:10025";\nbackend { host = "x"; }\n}, 2, qr/backend/],
	['bad log level', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\nlog { level = "chatty"; }\n}, 3, qr/level|chatty/],
	['syntax error', qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\nehlo { remove = [ "X" ;\n}\n}, undef, qr/./],
);
for my $b (@bad) {
	my ($what, $text, $line, $re) = @$b;
	(my $fname = $what) =~ s/\W+/_/g;
	my $file = spew("$dir/$fname.conf", $text);
	($code, $out, $err) = run('-t', '-c', $file);
	is($code, 1, "-t exits 1 on a config with a $what");
	my $lre = defined $line ? $line : '\d+';
	like($err, qr/^\Q$file\E:$lre: .*$re/m, "it says FILE:LINE: for the $what")
	    or diag("stderr: $err");
}

# A missing backend key: an error naming the file (a missing key has no line
# of its own, so "FILE: ..." is accepted as well as "FILE:LINE: ...").
my $nobackend = spew("$dir/nobackend.conf", qq{listen = "127.0.0.1:10025";\nhostname = "x.test";\n});
($code, $out, $err) = run('-t', '-c', $nobackend);
is($code, 1, '-t exits 1 without a backend');
like($err, qr/^\Q$nobackend\E:(?:\d+:)? .*backend/m, 'the message names the missing backend key')
    or diag("stderr: $err");

# A missing file.
($code, $out, $err) = run('-t', '-c', "$dir/does-not-exist.conf");
is($code, 1, '-t exits 1 when the file does not exist');
like($err, qr/does-not-exist\.conf/, 'the message names the file');

# Starting (not -t) on a bad config fails the same way and does not listen.
($code, $out, $err) = run('-c', "$dir/unknown_key.conf");
is($code, 1, 'starting with a bad config exits 1');
like($err, qr/unknown_key\.conf:3: /, 'and says where the error is');

done_testing;
