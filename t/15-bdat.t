# 15-bdat.t - BDAT (CHUNKING) in front of a backend without it.
#
# smtp-sink does not offer CHUNKING; with ehlo.add = [ "CHUNKING" ] the
# proxy offers it and turns the client's BDAT chunks into one DATA stream
# (dot-stuffed, with the end of data added).  What the sink dumps must be
# exactly the chunks' content.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $sink = start_sink();
my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:@{[ $sink->port ]}";
ehlo { add = [ "CHUNKING" ]; }
timeout { shutdown = 5; }
EOF
my $port = $proxy->port;

sub client {
	my $c = smtp_connect($port) or die "connect: $@\n";
	$c->read_reply;
	my $e = $c->ehlo('chunky.client.test');
	return ($c, $e);
}

# Send content as BDAT chunks of the given sizes (the last one LAST);
# returns the replies, one per chunk.
sub bdat {
	my ($c, $content, @sizes) = @_;
	my @r;
	my $off = 0;
	for my $i (0 .. $#sizes) {
		my $n = $sizes[$i];
		my $last = $i == $#sizes ? ' LAST' : '';
		$c->send("BDAT $n$last\r\n" . substr($content, $off, $n));
		$off += $n;
		push @r, $c->read_reply;
	}
	return @r;
}

my ($c, $e) = client();
ok((grep { $_ eq 'CHUNKING' } ehlo_keywords($e)), 'CHUNKING is offered (added by the config)') or diag($e->{raw});

# Dots at line starts (must be stuffed for DATA), a chunk boundary inside a
# CRLF and right after one.
my $m1 = make_message(subject => 'bdat one',
    body => ".leading dot\r\n..two\r\n.\r\nmiddle\r\n\r\n.\r\nend\r\n");
my $len = length $m1;
my $cr = index($m1, "\r\nmiddle") + 1;	# split between CR and LF
$c->send("MAIL FROM:<b1\@client.test>\r\nRCPT TO:<r\@example.test>\r\n");
reply_ok($c->read_reply, 250, undef, 'MAIL') for 1;
reply_ok($c->read_reply, 250, undef, 'RCPT');
my @r = bdat($c, $m1, 10, $cr - 10, 1, $len - $cr - 1);
is_deeply([map { $_->{code} // 'none' } @r], [250, 250, 250, 250], 'four chunks, each answered 250');
reply_ok($r[-1], 250, '2.0.0', 'the last chunk gets the backend\'s end-of-data reply');
my ($got) = $sink->wait_find(qr/^Subject: bdat one$/m);
is($got && $got->{message}, to_lf($m1), 'the sink got exactly the chunks\' content (dots stuffed for DATA and unstuffed there)');

# Content not ending in CRLF: the proxy ends the line before the end of data.
my $m2 = make_message(subject => 'bdat two', body => "no final newline");
$c->send("MAIL FROM:<b2\@client.test>\r\nRCPT TO:<r\@example.test>\r\n");
$c->read_reply for 1 .. 2;
@r = bdat($c, $m2, length $m2);
reply_ok($r[0], 250, undef, 'a single BDAT LAST chunk');
($got) = $sink->wait_find(qr/^Subject: bdat two$/m);
is($got && $got->{message}, to_lf($m2) . "\n", 'content without a final CRLF gets one line end added');

# An empty last chunk.
my $m3 = make_message(subject => 'bdat three');
$c->send("MAIL FROM:<b3\@client.test>\r\nRCPT TO:<r\@example.test>\r\n");
$c->read_reply for 1 .. 2;
$c->send('BDAT ' . length($m3) . "\r\n$m3");
reply_ok($c->read_reply, 250, undef, 'a chunk');
$c->send("BDAT 0 LAST\r\n");
reply_ok($c->read_reply, 250, undef, 'BDAT 0 LAST');
($got) = $sink->wait_find(qr/^Subject: bdat three$/m);
is($got && $got->{message}, to_lf($m3), 'the message ends with the empty last chunk');

# DATA still works in the same session.
my $m4 = make_message(subject => 'data after bdat');
my $dr = $c->send_mail(from => 'd@client.test', to => 'r@example.test', data => $m4);
reply_ok($dr->{end}, 250, undef, 'DATA after BDAT in the same session');
reply_ok($c->quit, 221, undef, 'QUIT');

# A bare LF in a chunk (conversion mode): 521 and nothing delivered.
{
	my ($b, undef) = client();
	$b->send("MAIL FROM:<bad\@client.test>\r\nRCPT TO:<r\@example.test>\r\n");
	$b->read_reply for 1 .. 2;
	my $bad = "Subject: bdat smuggle\r\n\r\nline\n.\nMAIL FROM:<evil\@evil.test>\r\n";
	$b->send('BDAT ' . length($bad) . " LAST\r\n$bad");
	my $x = $b->read_reply;
	reply_ok($x, 521, '5.5.2', 'a bare LF inside a converted BDAT chunk: 521 5.5.2');
	ok($b->wait_closed(5), 'and the connection is closed');
	$b->close;
	my ($o) = client();
	my $ok = $o->send_mail(from => 'o@client.test', to => 'r@example.test', data => make_message(subject => 'after bad bdat'));
	$o->quit;
	$sink->wait_find(qr/^Subject: after bad bdat$/m);
	is(scalar($sink->find(qr/bdat smuggle/)), 0, 'the message with the bare LF was not delivered');
	ok(!(grep { /evil/ } $sink->commands), 'and nothing after it reached the backend as a command');
}

# --- BDAT relayed as it is, to a backend with CHUNKING (a private Postfix
# relaying to a second sink; Postfix here tolerates bare newlines, so only
# the proxy stands between a bare LF and delivery).
SKIP: {
	skip 'a private Postfix needs root', 18 unless $> == 0;
	my $behind = start_sink(name => 'behind-postfix');
	my $pf = start_postfix(relay_port => $behind->port);
	my $rp = start_proxy(<<"EOF", name => 'relay');
backend = "127.0.0.1:@{[ $pf->port ]}";
timeout { shutdown = 5; }
EOF
	my $rclient = sub {
		my $c = smtp_connect($rp->port) or die "connect: $@\n";
		$c->read_reply;
		$c->ehlo('chunky.client.test');
		return $c;
	};

	# The summary line's size= for MAIL, RCPT and two chunks in one write.
	my $m = make_message(subject => 'relayed pipelined', body => "x\r\n" x 40);
	my $h = 40;
	my $c = $rclient->();
	$c->send("MAIL FROM:<piped\@client.test>\r\nRCPT TO:<r\@example.test>\r\nBDAT $h\r\n"
	    . substr($m, 0, $h) . 'BDAT ' . (length($m) - $h) . " LAST\r\n" . substr($m, $h));
	my @r = map { $c->read_reply } 1 .. 4;
	is(join(' ', map { $_->{code} // 'none' } @r), '250 250 250 250', 'pipelined relayed BDAT: every reply 250');
	like($rp->wait_log(qr/(from=<piped\@client\.test>[^\n]*)/) // '', qr/ size=@{[ length $m ]} /,
	    'the summary line has the size of both chunks');
	ok($behind->wait_find(qr/^Subject: relayed pipelined\r?$/m), 'delivered');
	$c->quit;

	# Bare LF and bare CR inside relayed chunks: 521, the backend connection
	# dropped before the last octet, nothing delivered.
	my @cases = (
	    ['bare LF in the last chunk', ["Subject: relay-smuggle-1\r\n\r\nline\n.\nMAIL FROM:<evil\@evil.test>\r\n"]],
	    ['bare LF at the start of the last chunk', ["Subject: relay-smuggle-2\r\n\r\nline\r\n", "\n.\r\nx\r\n"]],
	    ['bare CR between chunks', ["Subject: relay-smuggle-3\r\n\r\nline\r", "x\r\n"]],
	    ['a CR at the very end', ["Subject: relay-smuggle-4\r\n\r\nline\r"]],
	    ['bare LF in a first chunk', ["Subject: relay-smuggle-5\r\n\nline\r\n", "more\r\n"]],
	);
	for my $case (@cases) {
		my ($what, $chunks) = @$case;
		my $b = $rclient->();
		$b->send("MAIL FROM:<bad\@client.test>\r\nRCPT TO:<r\@example.test>\r\n");
		$b->read_reply for 1 .. 2;
		my $x;
		for my $i (0 .. $#$chunks) {
			my $last = $i == $#$chunks ? ' LAST' : '';
			$b->send('BDAT ' . length($chunks->[$i]) . "$last\r\n$chunks->[$i]");
			$x = $b->read_reply;
			last if !$x->{code} || $x->{code} != 250;
		}
		reply_ok($x, 521, '5.5.2', "relayed BDAT, $what: 521 5.5.2");
		ok($b->wait_closed(5), "relayed BDAT, $what: the connection is closed");
		$b->close;
	}
	my $o = $rclient->();
	$o->send_mail(from => 'o@client.test', to => 'r@example.test', data => make_message(subject => 'after relayed smuggling'));
	$o->quit;
	ok($behind->wait_find(qr/^Subject: after relayed smuggling\r?$/m), 'a message after them is delivered');
	is(scalar($behind->find(qr/relay-smuggle/)), 0, 'none of the messages with a bare CR or LF was delivered');
	unlike($pf->maillog, qr/from=<bad\@client\.test>, size/, 'nor queued by Postfix');
	$rp->stop_ok('the relaying proxy exits 0');
	$pf->stop;
}

$proxy->stop_ok;
done_testing;
