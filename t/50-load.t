# 50-load.t - a 100 MB message and 200 concurrent sessions.
#
# Nothing here is timed: the checks are that everything arrives, complete,
# and that the proxy's memory stays bounded while a large message streams
# through (its peak RSS, VmHWM, under 64 MB).  External commands run under
# timeout(1) and every wait is bounded, so a stuck run ends.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $sink = start_sink(verbose => 0);
my $bport = $sink->port;
my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$bport";
limits { max_message_size = 0; max_connections = 1000; max_connections_per_client = 0; }	# 200 sessions from 127.0.0.1
timeout { data = 300; backend = 300; shutdown = 10; }
EOF
my $port = $proxy->port;

# The size of the message in a sink dump file, and its last line, read
# without loading the file: file size minus the sink's own records minus the
# empty line it appends.
sub dump_size {
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return (undef, undef);
	read($fh, my $head, 65536);
	my $hlen = 0;
	$hlen += length $1 while $head =~ s/\A(X-[A-Za-z-]+: [^\n]*\n)//;
	$hlen += length $1 if $head =~ s/\A(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)//;
	my $total = -s $file;
	seek($fh, -200, 2);
	read($fh, my $tail, 200);
	close $fh;
	my ($last) = $tail =~ /([^\n]*)\n\n\z/;
	return ($total - $hlen - 1, $last);
}

# --- one 100 MB message, generated as it is sent
{
	my $size = 100 * 1024 * 1024;
	my $line = ('0123456789' x 7) . "abcdefgh\r\n";		# 80 octets
	my $block = $line x 8192;					# 640 KiB per write
	my $nblocks = int($size / length $block);
	my $header = make_message(subject => 'one hundred megabytes', body => '');
	my $trailer = "the last line\r\n";
	my $sent = length($header) + $nblocks * length($block) + length($trailer);
	my $crlfs = ($header =~ tr/\n//) + $nblocks * 8192 + 1;
	my $sent_lf = $sent - $crlfs;		# as the sink stores it

	my $c = smtp_connect($port, timeout => 300);
	$c->read_reply;
	$c->ehlo('big.client.test');
	my $r = $c->begin_data(from => 'big@client.test', to => 'big@example.test');
	reply_ok($r->{data}, 354, undef, '100 MB: DATA');
	my $ok = $c->send($header);
	for (1 .. $nblocks) {
		last unless $ok;
		$ok = $c->send($block);
	}
	$ok &&= $c->send($trailer . ".\r\n");
	ok($ok, "100 MB: all $sent octets written to the proxy");
	my $end = $c->read_reply(300);
	reply_ok($end, 250, '2.0.0', '100 MB: accepted by the backend');
	$c->quit;

	my $hwm = $proxy->vmhwm;
	SKIP: {
		skip "built with AddressSanitizer: its shadow memory is not the proxy's (VmHWM " .
		    ($hwm // '?') . " kB)", 1 if SmtpChainTest::sanitized();
		ok(defined $hwm && $hwm < 64 * 1024, "100 MB: the proxy's peak RSS stayed under 64 MB (VmHWM " .
		    ($hwm // '?') . " kB)");
	}

	my @f;
	SmtpChainTest::wait_until(sub { @f = $sink->files; @f >= 1 }, 60, 0.2);
	is(scalar @f, 1, '100 MB: the sink has the message');
	my ($got, $last) = @f ? dump_size($f[0]) : (undef, undef);
	is($got, $sent_lf, "100 MB: delivered size is right ($sent_lf octets in LF form)");
	is($last, 'the last line', '100 MB: it ends with the last line sent');
	my $l = $proxy->wait_log(qr/(from=<big\@client\.test>[^\n]*)/);
	like($l // '', qr/size=\d{9}/, '100 MB: logged with its size');
	unlink @f;	# 100 MB less on disk for the rest
}

# --- 200 concurrent sessions, 1000 messages
SKIP: {
	my $src = SmtpChainTest::find_program('smtp-source') or skip 'smtp-source not found', 4;
	my $before = () = $sink->files;
	my $out = SmtpChainTest::tmpdir() . '/smtp-source.out';
	system("timeout -k 5 300 $src -s 200 -m 1000 -l 2000 -f load\@client.test -t load\@example.test " .
	    "-M load.client.test 127.0.0.1:$port >$out 2>&1");
	is($?, 0, 'smtp-source: 200 sessions, 1000 messages, no error') or diag(slurp($out));
	my @f;
	SmtpChainTest::wait_until(sub { @f = $sink->files; @f >= $before + 1000 }, 120, 0.2);
	is(scalar(@f) - $before, 1000, 'the sink received all 1000 messages');
	my $sent = () = $proxy->log_text =~ /from=<load\@client\.test>[^\n]* status=sent /g;
	is($sent, 1000, 'the proxy logged 1000 messages as sent');
	ok($proxy->alive, 'the proxy is still running');
}

$proxy->stop_ok;
done_testing;
