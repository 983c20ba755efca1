# 97-header-split.t - the proxy's filters see the headers Postfix parses.
#
# A corpus of odd header sections (obsolete "Name : value" syntax, white
# space and tabs before the colon, 8-bit values and names, a line without a
# colon, an empty first line, a first line starting with white space, an mbox
# "From " line, very long folded and unfolded headers, controls, DEL, ...)
# goes through the proxy, with a regex filter whose header_checks and
# body_checks WARN on every line, to a private Postfix whose own
# header_checks and body_checks do the same.  For every message the names of
# the headers each one logged must be the same list, in order: a header the
# backend parses is a header for the filters, and a line the backend takes
# for body is body for them.  A NUL in a header value (which no C-string
# filter, header_checks or milter, could see past) is refused with 550
# 5.6.0, and the message is not relayed.  Before the fix, "X-A : 1" as the
# first line made every header body for the filters.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;

my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $RX = "$BUILD/filters/regex/.libs/regex.so";
plan skip_all => "$RX is not built" unless -f $RX;

my $dir = tmpdir();
my $checks = spew("$dir/header_checks", "/^/ WARN seen-header\n");
my $bchecks = spew("$dir/body_checks", "/^zz-end-([a-z0-9]+)/ WARN seen-end-\$1\n");

my $sink = start_sink(name => 'delivered');
my $pf = start_postfix(relay_port => $sink->port, main => <<"EOF");
header_checks = regexp:$checks
body_checks = regexp:$bchecks
EOF
my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:@{[$pf->port]}";
spool_dir = "$dir";
log { level = "info"; }
timeout { command = 60; data = 60; backend = 60; connect = 10; shutdown = 5; }
filter {
    module = "$RX";
    header_checks = "$checks";
    body_checks = "$bchecks";
}
EOF

my $long_folded = 'X-Folded: start' . join('', map { "\r\n\tpart $_ " . ('f' x 60) } 1 .. 300);
my $long_line = 'X-Long: ' . ('L' x 1500);
my @corpus = (
	['obs-field first', "X-A : 1\r\nX-B: 2\r\nSubject: s\r\n\r\nbody\r\n"],
	['tab before the colon', "X-A\t: 1\r\nX-B:2\r\n\r\nbody\r\n"],
	['spaces and tabs before the colon later', "X-A: 1\r\nX-B \t  : 2\r\nX-C: 3\r\n\r\nbody\r\n"],
	['8-bit value', "X-A: caf\xc3\xa9\r\nX-B: 2\r\n\r\nbody\r\n"],
	['8-bit name', "X-A: 1\r\nX-\xc3\xa9: 2\r\nX-C: 3\r\n\r\nbody\r\n"],
	['line without a colon', "X-A: 1\r\nno colon here\r\nX-C: 3\r\n\r\nbody\r\n"],
	['name and spaces, no colon', "X-A: 1\r\nX-B   \r\nX-C: 3\r\n\r\nbody\r\n"],
	['empty first line', "\r\nX-A: 1\r\nX-B: 2\r\n\r\nbody\r\n"],
	['white space first', " X-A: 1\r\nX-B: 2\r\n\r\nbody\r\n"],
	['mbox From line first', "From a\@b.test Mon Jan  1 00:00:00 2024\r\nX-B: 2\r\n\r\nbody\r\n"],
	['space inside the name', "X-A: 1\r\nX B: 2\r\nX-C: 3\r\n\r\nbody\r\n"],
	['empty name', "X-A: 1\r\n: 2\r\nX-C: 3\r\n\r\nbody\r\n"],
	['DEL in the name', "X-A: 1\r\nX-\x7f: 2\r\nX-C: 3\r\n\r\nbody\r\n"],
	['controls in the value', "X-A: 1\x01\x02\x7f\r\nX-B: 2\r\n\r\nbody\r\n"],
	['colons in the value', "X-A::: 1\r\nX-B:2:\r\n\r\nbody\r\n"],
	['white-space-only continuation', "X-A: 1\r\n \r\nX-B: 2\r\n\r\nbody\r\n"],
	['long folded header', "$long_folded\r\nX-After: 1\r\n\r\nbody\r\n"],
	['long unfolded header', "$long_line\r\nX-After: 1\r\n\r\nbody\r\n"],
	['no separator', "X-A: 1\r\nX-B : 2\r\nbody line\r\n"],
	['headers only', "X-A: 1\r\nX-B : 2\r\n"],
	['dot-stuffed name', ".X-A: 1\r\nX-B: 2\r\n\r\nbody\r\n"],
);

# The header names in log lines of one message: Postfix writes "warning:
# header NAME...: seen-header", the regex filter "warn header NAME:...".
sub names_in {
	my ($text, $re) = @_;
	my @n;
	push @n, $1 while $text =~ /$re/g;
	return [grep { $_ ne 'Received' } @n];
}

my $i = 0;
for my $case (@corpus) {
	my ($name, $msg) = @$case;
	$i++;
	my ($plog, $xlog) = (length($pf->maillog), length($proxy->log_text));
	my $c = smtp_connect($proxy->port) or BAIL_OUT("connect: $@");
	$c->read_reply;
	$c->ehlo('client.test');
	my $r = $c->send_mail(from => 'a@client.test', to => 'b@example.test',
	    data => $msg . "zz-end-$i\r\n");
	reply_ok($r->{end}, 250, undef, "$name: relayed");
	$c->quit;
	ok($pf->wait_maillog(qr/seen-end-$i\b/, 60), "$name: Postfix saw the end");
	ok($proxy->wait_log(qr/seen-end-$i\b/, 60), "$name: the filter saw the end");
	my $p = names_in(substr($pf->maillog, $plog),
	    qr/warning: header ([!-9;-~]+)[ \t]*:.*?: seen-header/);
	my $x = names_in(substr($proxy->log_text, $xlog),
	    qr/(?i:warn) header ([!-9;-~]+):.*: seen-header/);
	is_deeply($x, $p, "$name: the filter saw the headers Postfix parsed (@$p)");
}

# A NUL in a header value: 550, not relayed, a log line that says why.
{
	my $c = smtp_connect($proxy->port) or BAIL_OUT("connect: $@");
	$c->read_reply;
	$c->ehlo('client.test');
	my $r = $c->send_mail(from => 'a@client.test', to => 'b@example.test',
	    data => "X-A: 1\r\nX-N: hidden\0X-Evil: yes\r\n\r\nzz-end-nul\r\n");
	reply_ok($r->{end}, 550, '5.6.0', 'NUL in a header value: 550 5.6.0');
	like($r->{end}{raw}, qr/NUL character in a message header/, 'with a clear text');
	ok($proxy->wait_log(qr/holding the message: NUL character in a header value/, 30),
	    'and a log line');
	my $r2 = $c->send_mail(from => 'a@client.test', to => 'b@example.test',
	    data => "X-A: 1\r\n\r\nbody \0 with a NUL\r\nzz-end-bodynul\r\n");
	reply_ok($r2->{end}, 250, undef, 'a NUL in the body is relayed (body filters see bytes)');
	$c->quit;
	ok($pf->wait_maillog(qr/seen-end-bodynul\b/, 60), 'Postfix got the one after it');
	unlike($pf->maillog, qr/seen-end-nul\b/, 'the message with the NUL header never reached Postfix');
}

$proxy->stop_ok('proxy');
done_testing();
