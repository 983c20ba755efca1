# 62-filter-errors.t - filter modules that cannot be loaded.
#
# `smtpchain -t` loads every module of the chain and runs its init(), so
# each problem is found before the daemon starts: it exits 1 and says
# 'FILE:LINE: filter "MODULE": ...' with the line of the filter {} block (or
# of the option at fault) and MODULE the `module` value as written.  A good
# chain passes.  Nothing listens here.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

my $bin = $ENV{SMTPCHAIN} or plan skip_all => 'SMTPCHAIN is not set (run through make check)';
my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $MODS = "$BUILD/t/modules/.libs";
my ($TF, $BADABI, $INITFAIL) = map { "$MODS/$_.so" } qw(testfilter badabi initfail);
for ($TF, $BADABI, $INITFAIL) {
	plan skip_all => "$_ is not built (make check builds it)" unless -f $_;
}
my $dir = tmpdir();

# Run the daemon; (exit code, stdout, stderr), bounded by timeout(1).
sub run {
	my (@args) = @_;
	my ($out, $err) = ("$dir/run.out", "$dir/run.err");
	my $cmd = join(' ', 'timeout', '-k', '5', '20', map { quotemeta } $bin, @args);
	system("$cmd >$out 2>$err </dev/null");
	my $code = $? == -1 ? -1 : $? & 127 ? 128 + ($? & 127) : $? >> 8;
	return ($code, slurp($out) // '', slurp($err) // '');
}

# A config: listen and backend on lines 1-2, then the text.
sub conf {
	my ($name, $text) = @_;
	return spew("$dir/$name.conf",
	    qq{listen = "127.0.0.1:10025";\nbackend = "127.0.0.1:25";\n} . $text);
}

# -t on the config: exit 1 and exactly one line of error, "FILE:LINE: ...".
sub fails_ok {
	my ($what, $file, $line, $re) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($code, $out, $err) = run('-t', '-c', $file);
	is($code, 1, "$what: -t exits 1");
	like($err, qr/^\Q$file\E:$line: $re$/m, "$what: it says FILE:$line: and why")
	    or diag("stderr: $err");
	unlike($err, qr/AddressSanitizer|runtime error|panic/, "$what: no crash report");
	return $err;
}

my ($code, $out, $err);

# --- a good chain passes -t (two instances of one module, options of each type)
my $good = conf('good', <<"EOF");
filter {
    module = "$TF";
    tag = "one";
    reject_rcpt = "nobody\@example.test";
    verdict_subject = [ "SPAM=reject", "HOLD=quarantine" ];
    trace = true;
}
filter {
    module = "$TF";
    tag = "two";
    needs = [];
    hooks = [ "mail", "rcpt" ];
    add_header = "X-Two: yes";
}
EOF
($code, $out, $err) = run('-t', '-c', $good);
is($code, 0, 'a good chain of two modules passes -t') or diag($err);
is($err, '', 'and -t prints nothing on stderr for it');

# A module named without a '/' is looked for in module_path as NAME.so.
my $bypath = conf('bypath', qq{module_path = "$MODS";\nfilter {\n    module = "testfilter";\n    tag = "x";\n}\n});
($code, $out, $err) = run('-t', '-c', $bypath);
is($code, 0, 'module = "testfilter" is found as module_path/testfilter.so') or diag($err);

# --- the wrong ABI: refused before its init() (which would abort) runs
my $f = conf('badabi', qq{\n\nfilter {\n    module = "$BADABI";\n}\n});
fails_ok('wrong ABI', $f, 5,
    qr/filter "\Q$BADABI\E": built for filter ABI 2, this smtpchain has ABI 1 \(rebuild the module\)/);

# --- init() fails: its message, or the text of its option
$f = conf('initfail', qq{filter {\n    module = "$INITFAIL";\n}\n});
fails_ok('init fails', $f, 3, qr/filter "\Q$INITFAIL\E": initfail: this module always fails/);
$f = conf('initfail-msg', qq{filter {\n    module = "$INITFAIL";\n    message = "cannot reach the scanner at 127.0.0.1:3310";\n}\n});
fails_ok('init fails with its own text', $f, 3,
    qr/filter "\Q$INITFAIL\E": cannot reach the scanner at 127\.0\.0\.1:3310/);
$f = conf('initfail-ctl', qq{filter {\n    module = "$INITFAIL";\n    message = "two\\nlines";\n}\n});
fails_ok('init fails with a newline in its text', $f, 3,
    qr/filter "\Q$INITFAIL\E": two\?lines/);

# --- the file is missing, or not a module
my $missing = "$MODS/no-such-module.so";
$f = conf('missing', qq{filter {\n    module = "$missing";\n}\n});
fails_ok('missing module file', $f, 3,
    qr/filter "\Q$missing\E": cannot load \Q$missing\E: cannot open shared object file: No such file or directory/);
$f = conf('missing-name', qq{module_path = "$MODS";\nfilter {\n    module = "nosuchname";\n}\n});
fails_ok('missing module by name', $f, 4,
    qr/filter "nosuchname": cannot load \Q$MODS\E\/nosuchname\.so: cannot open shared object file: No such file or directory/);
my ($libm) = grep { -f $_ } map { ("/lib/$_/libm.so.6", "/usr/lib/$_/libm.so.6") }
    ('x86_64-linux-gnu', 'aarch64-linux-gnu', 'i386-linux-gnu', 'arm-linux-gnueabihf');
SKIP: {
	skip 'no libm.so.6 found to load as a non-module', 3 unless $libm;
	$f = conf('notamodule', qq{filter {\n    module = "$libm";\n}\n});
	fails_ok('a shared object without the symbol', $f, 3,
	    qr/filter "\Q$libm\E": \Q$libm\E does not export smtpchain_filter \(not a smtpchain filter module\?\)/);
}
my $notso = spew("$dir/not-a-library.so", "this is not an ELF file\n");
$f = conf('notelf', qq{filter {\n    module = "$notso";\n}\n});
fails_ok('a file that is not a shared object', $f, 3, qr/filter "\Q$notso\E": cannot load \Q$notso\E: .+/);

# --- options: an unknown key, wrong types, a value the module refuses
$f = conf('unknown', qq{filter {\n    module = "$TF";\n    tag = "x";\n    reject_rcpts = "typo\@example.test";\n}\n});
fails_ok('unknown option key', $f, 6, qr/filter "\Q$TF\E": unknown key "reject_rcpts"/);
$f = conf('type-string', qq{filter {\n    module = "$TF";\n\n    tag = 42;\n}\n});
fails_ok('a number for a string option', $f, 6, qr/filter "\Q$TF\E": tag: expected a string/);
$f = conf('type-bool', qq{filter {\n    module = "$TF";\n    trace = "yes please";\n}\n});
fails_ok('a string for a boolean option', $f, 5, qr/filter "\Q$TF\E": trace: expected a boolean/);
$f = conf('type-list', qq{filter {\n    module = "$TF";\n    hooks = 7;\n}\n});
fails_ok('a number for a list option', $f, 5,
    qr/filter "\Q$TF\E": hooks: expected a string or an array of strings/);
$f = conf('type-list-elem', qq{filter {\n    module = "$TF";\n    needs = [\n        "headers",\n        3\n    ];\n}\n});
fails_ok('a number inside a list option', $f, 7, qr/filter "\Q$TF\E": needs: expected a string/);
$f = conf('bad-value', qq{filter {\n    module = "$TF";\n    verdict_subject = [ "SPAM=explode" ];\n}\n});
fails_ok('a value the module refuses', $f, 5,
    qr/filter "\Q$TF\E": verdict_subject: bad entry "SPAM=explode" \(expected WORD=reject\|tempfail\|discard\|quarantine\|accept\)/);

# --- the block itself: no module key; the second block is the bad one
$f = conf('nomodule', qq{filter {\n    tag = "x";\n}\n});
fails_ok('a filter block without module', $f, 3, qr/filter: missing key "module"/);
$f = conf('second', qq{filter {\n    module = "$TF";\n}\nfilter {\n    module = "$BADABI";\n}\n});
fails_ok('the second of two blocks is bad', $f, 6, qr/filter "\Q$BADABI\E": built for filter ABI 2, .*/);

# --- starting (not -t) fails the same way and never listens
{
	my $port = free_port();
	my $start = spew("$dir/start.conf", qq{listen = "127.0.0.1:$port";\nbackend = "127.0.0.1:25";\n} .
	    qq{filter {\n    module = "$INITFAIL";\n}\n});
	($code, $out, $err) = run('-c', $start);
	is($code, 1, 'starting with a failing module exits 1');
	like($err, qr/^\Q$start\E:3: filter "\Q$INITFAIL\E": initfail: this module always fails$/m,
	    'with the same message') or diag($err);
	ok(!SmtpChainTest::port_listening($port), 'and nothing listens on its port');
}

done_testing;
