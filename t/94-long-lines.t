# 94-long-lines.t - long but legal input is never cut.
#
# RFC 5322 limits a line to 998 octets, but mail with longer lines exists
# and an SMTP hop must not change it.  Three messages go through a chain of
# every filter kind - regex (header_checks and body_checks that match
# nothing), headers (adds one header) and the milter module with
# t/milter/testmilter (asked to change nothing) - to the scripted backend,
# which keeps exactly what it got:
#   - a 100 KB header folded into lines of 78 octets,
#   - a 100 KB header on one line (not legal, but it must not be cut
#     either: max_header_size is 1 MB),
#   - a 100 KB body line without a CRLF inside.
# Each must arrive byte for byte (CRLF included), with only the headers
# module's header added, and through the proxy alone (no filter: streamed,
# not held) unchanged.  The milter is told to read commands of up to 1 MB
# (smfi_setmaxdatasize): libmilter's default is 64 KB, and a milter left at
# that hangs up on a longer header, which the proxy must turn into a 4xx
# (checked last, with a second milter), never a cut header and a 250.  The
# module offers SMFIP_MDS_1M, but Debian's libmilter is not built with MDS
# negotiation: it ignores the offer (t/70-milter.t has a milter that takes
# it), and the warning says what happened.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;
use SmtpChainFaults;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $RX = "$build/filters/regex/.libs/regex.so";
my $HD = "$build/filters/headers/.libs/headers.so";
my $MT = "$build/filters/milter/.libs/milter.so";
my $testmilter = "$build/t/milter/testmilter";
for ($RX, $HD, $MT) { plan skip_all => "$_ is not built" unless -f $_ }
plan skip_all => "$testmilter is not built" unless -x $testmilter;

my $dir = tmpdir();
my $HC = spew("$dir/header_checks", "/^X-Never-Matches:/ REJECT never\n/^Subject: .*forbidden-word/ REJECT no\n");
my $BC = spew("$dir/body_checks", "/forbidden-body-word/ REJECT no\n");

# A testmilter on a free port; returns the port.
sub start_milter {
	my ($name, @args) = @_;
	my $port = free_port();
	my $pid = SmtpChainTest::spawn(argv => [$testmilter, '-p', "inet:$port\@127.0.0.1", '-n', $name, @args],
	    output => "$dir/milter-$name.log");
	SmtpChainTest::on_cleanup("testmilter $name", sub { SmtpChainTest::stop_pid($pid, 'KILL', 5) });
	wait_until(sub { SmtpChainTest::port_listening($port) || !proc_alive($pid) }, 10);
	die "testmilter $name did not come up\n" unless SmtpChainTest::port_listening($port);
	return $port;
}
my $mport = start_milter('long', '-D', 1048575);
my $mport64 = start_milter('default');

my $b = start_backend(name => 'backend');
my $chain = start_proxy(<<"EOF", name => 'chain');
backend = "127.0.0.1:@{[ $b->port ]}";
timeout { shutdown = 5; }
filter {
	module = "$RX";
	header_checks = "$HC";
	body_checks = "$BC";
}
filter {
	module = "$HD";
	add = [ "X-Scanned-By: smtpchain" ];
}
filter {
	module = "$MT";
	socket = "inet:127.0.0.1:$mport";
	timeout_eom = 20;
}
EOF
my $plain = start_proxy(qq{backend = "127.0.0.1:@{[ $b->port ]}";\ntimeout { shutdown = 5; }\n}, name => 'plain');
my $ledger = ledger(messages => sub { $b->message_texts });

# 100 KB of words, folded into lines of at most 78 octets.
my @words = map { sprintf('word%05d', $_) } 1 .. 10_000;
my $folded = '';
my $cur = 'X-Long-Folded:';
for my $w (@words) {
	if (length($cur) + 1 + length($w) > 78) { $folded .= "$cur\r\n"; $cur = '' }
	$cur .= " $w";
}
$folded .= "$cur\r\n";
my $unfolded = 'X-Long-Unfolded: ' . join(' ', @words) . "\r\n";
my $bodyline = join('', map { sprintf('b%05d', $_) } 1 .. 17_000) . "\r\n";

my @cases = (
	['a 100 KB folded header', $folded, "Short body.\r\n"],
	['a 100 KB unfolded header line', $unfolded, "Short body.\r\n"],
	['a 100 KB body line', '', "First line.\r\n$bodyline" . "Last line.\r\n"],
);
for my $case (@cases) {
	my ($what, $headers, $body) = @$case;
	ok(length($headers) + length($body) > 100_000, "($what: " . (length($headers) + length($body)) . ' octets)');
	for my $via ([$chain, 'through regex, headers and milter', "X-Scanned-By: smtpchain\r\n"], [$plain, 'through the proxy alone', '']) {
		my ($p, $how, $added) = @$via;
		my ($tag, $text) = SmtpChainFaults::tagged_message(prefix => 'long', headers => $headers,
		    body => $body);
		# notrace: testmilter changes nothing in this message.
		$text =~ s/^Subject: fault /Subject: notrace fault /m;
		$ledger->tried($tag);
		my $c = smtp_connect($p->port, timeout => 60) or die;
		$c->read_reply;
		$c->ehlo('long.test');
		my $r = $c->send_mail(from => 'long@client.test', to => 'rcpt@example.test', data => $text);
		$c->quit;
		$ledger->saw_result($tag, $r);
		reply_ok($r->{end}, 250, undef, "$what $how: accepted");
		my ($got) = grep { /^Message-ID: <\Q$tag\E\@/m } $b->message_texts;
		(my $want = $text) =~ s/\r\n\r\n/\r\n$added\r\n/;
		ok(defined $got && $got eq $want, "$what $how: at the backend byte for byte")
		    or diag(defined $got ? 'got ' . length($got) . ' octets, want ' . length($want) .
			', first difference at ' . first_diff($got, $want) : 'not at the backend');
	}
}

# Where two strings first differ, with a little context.
sub first_diff {
	my ($a, $b) = @_;
	my $i = 0;
	$i++ while $i < length $a && $i < length $b && substr($a, $i, 1) eq substr($b, $i, 1);
	(my $ga = substr($a, $i > 20 ? $i - 20 : 0, 60)) =~ s/\r/\\r/g;
	(my $gb = substr($b, $i > 20 ? $i - 20 : 0, 60)) =~ s/\r/\\r/g;
	$ga =~ s/\n/\\n/g;
	$gb =~ s/\n/\\n/g;
	return "$i: got '$ga', want '$gb'";
}

# A milter with libmilter's default limit: the long header cannot reach
# it; the client is told to try later, nothing is cut or delivered.
{
	my $p64 = start_proxy(<<"EOF", name => 'milter64k');
backend = "127.0.0.1:@{[ $b->port ]}";
timeout { shutdown = 5; }
filter {
	module = "$MT";
	socket = "inet:127.0.0.1:$mport64";
}
EOF
	my ($tag, $text) = SmtpChainFaults::tagged_message(prefix => 'long64k', headers => $folded);
	$text =~ s/^Subject: fault /Subject: notrace fault /m;
	$ledger->tried($tag);
	my $c = smtp_connect($p64->port, timeout => 60) or die;
	$c->read_reply;
	$c->ehlo('long.test');
	my $r = $c->send_mail(from => 'long@client.test', to => 'rcpt@example.test', data => $text);
	$c->quit;
	$ledger->saw_result($tag, $r);
	reply_ok($r->{end}, 451, '4.7.1', 'a 100 KB header and a milter that reads 64 KB at most: 451 4.7.1');
	like($p64->log_text, qr/after a header of \d+ octets \(it negotiated 65535; libmilter reads no more/,
	    'the warning names the header that was too long for the milter');
	my ($tag2, $text2) = SmtpChainFaults::tagged_message(prefix => 'long64k-body', body => "x\r\n$bodyline");
	$text2 =~ s/^Subject: fault /Subject: notrace fault /m;
	$ledger->tried($tag2);
	$c = smtp_connect($p64->port, timeout => 60) or die;
	$c->read_reply;
	$c->ehlo('long.test');
	$r = $c->send_mail(from => 'long@client.test', to => 'rcpt@example.test', data => $text2);
	$c->quit;
	$ledger->saw_result($tag2, $r);
	reply_ok($r->{end}, 250, undef, 'a 100 KB body line to that milter: accepted (the body goes in chunks)');
	my ($got) = grep { /^Message-ID: <\Q$tag2\E\@/m } $b->message_texts;
	ok(defined $got && $got eq $text2, 'and delivered byte for byte');
	$p64->stop_ok('the 64 KB milter proxy exits 0');
}

$ledger->check('long lines');
$chain->stop_ok('the chain proxy exits 0');
$plain->stop_ok('the plain proxy exits 0');
done_testing();
