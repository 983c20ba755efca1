# 98-refused-rcpts.t - refused recipients (issue 12, item 9).
#
# limits.max_refused_recipients, Postfix's smtpd_hard_error_limit for
# recipients: a session that had that many RCPTs refused (by the backend, a
# filter or the proxy itself) without a delivered message gets, at its next
# command, once every reply owed is sent, "421 4.7.0 ... too many errors"
# and is closed, with a log line.  A delivered message starts the count
# again.  With a filter chain (which records the recipients of a held
# message) the refused ones are not kept: thousands refused in pipelined
# batches, with a high limit, still leave the accepted ones replayed right
# and the message delivered once.  Before the fix there was no limit: the
# 421 tests failed.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $BUILD = $ENV{SMTPCHAIN_BUILDDIR} || SmtpChainTest::srcdir();
my $RX = "$BUILD/filters/regex/.libs/regex.so";
plan skip_all => "$RX is not built" unless -f $RX;

my $dir = tmpdir();
my $RC = spew("$dir/recipient_checks", "/^bad/ REJECT Recipient refused by the filter\n");
my $sink = start_sink(name => 'sink', verbose => 0);
# a backend that refuses every RCPT (4xx)
my $nosink = start_sink(name => 'refusing', verbose => 0, args => ['-r', 'RCPT']);

sub proxy_for {
	my ($name, $bport, $limit) = @_;
	return start_proxy(<<"EOF", name => $name);
backend = "127.0.0.1:$bport";
spool_dir = "$dir";
limits { max_refused_recipients = $limit; }
timeout { command = 60; data = 60; backend = 60; connect = 10; shutdown = 5; }
filter {
    module = "$RX";
    recipient_checks = "$RC";
}
EOF
}

sub client {
	my ($port) = @_;
	my $c = smtp_connect($port) or BAIL_OUT("connect: $@");
	$c->read_reply;
	$c->ehlo('client.test');
	return $c;
}

# --- refused by the backend, one at a time: the 6th command gets 421
{
	my $p = proxy_for('backend-refuses', $nosink->port, 5);
	my $c = client($p->port);
	reply_ok($c->cmd('MAIL FROM:<a@client.test>'), 250, undef, 'MAIL');
	my @codes = map { $c->cmd("RCPT TO:<r$_\@example.test>")->{code} } 1 .. 5;
	is_deeply(\@codes, [(450) x 5], 'five recipients refused by the backend (its 4xx)')
	    or diag("@codes");
	my $r = $c->cmd('RCPT TO:<r6@example.test>');
	reply_ok($r, 421, '4.7.0', 'the next command: 421 4.7.0');
	is($r->{raw}, "421 4.7.0 proxy.test Error: too many errors\r\n",
	    "Postfix's reply, as smtpchain.conf(5) says");
	ok($c->read_reply->{eof}, 'and the connection is closed');
	ok($p->wait_log(qr/5 refused recipients without a delivered message \(limits\.max_refused_recipients\)/),
	    'a log line names the limit');

	# pipelined: every RCPT sent in one write gets its own reply first
	$c = client($p->port);
	$c->send("MAIL FROM:<a\@client.test>\r\n" . join('', map { "RCPT TO:<p$_\@example.test>\r\n" } 1 .. 12)
	    . "NOOP\r\n");
	my @replies = map { $c->read_reply } 1 .. 14;
	is($replies[0]{code}, 250, 'pipelined: MAIL');
	my @rc = map { $_->{code} // 'none' } @replies[1 .. 13];
	my $first421 = (grep { $rc[$_] eq '421' } 0 .. $#rc)[0];
	ok(defined $first421, 'pipelined: a 421 comes') or diag("@rc");
	ok(defined $first421 && $first421 >= 5 && !grep({ $_ ne '450' } @rc[0 .. $first421 - 1]),
	    'after the replies owed, each the backend\'s 450, at least five') or diag("@rc");
	$p->stop_ok('proxy');
}

# --- refused by a filter and by the proxy; a delivered message starts the count again
{
	my $p = proxy_for('filter-refuses', $sink->port, 5);
	my $c = client($p->port);
	reply_ok($c->cmd('MAIL FROM:<a@client.test>'), 250, undef, 'MAIL');
	reply_ok($c->cmd("RCPT TO:<bad$_\@example.test>"), 554, undef, "filter refuses bad$_") for 1 .. 3;
	reply_ok($c->cmd('RCPT TO:<no-brackets@example.test'), 501, undef, 'a syntax error counts too');
	reply_ok($c->cmd('RSET'), 250, undef, 'RSET');
	my $r = $c->send_mail(from => 'a@client.test', to => ['good@example.test'],
	    data => make_message(subject => 'delivered'));
	reply_ok($r->{end}, 250, undef, 'four refusals, then a delivered message');
	reply_ok($c->cmd('MAIL FROM:<a@client.test>'), 250, undef, 'MAIL again');
	reply_ok($c->cmd("RCPT TO:<bad$_\@example.test>"), 554, undef, "after it, bad$_ refused")
	    for 1 .. 4;
	reply_ok($c->cmd('RCPT TO:<good2@example.test>'), 250, undef,
	    'the count started again: four more refusals are allowed');
	reply_ok($c->cmd('RCPT TO:<bad5@example.test>'), 554, undef, 'the fifth since the delivery');
	reply_ok($c->cmd('NOOP'), 421, '4.7.0', 'then 421');
	$p->stop_ok('proxy');
}

# --- many refused, pipelined, with a chain: the accepted ones are replayed
# right (the refused ones are not kept), and the message goes once
{
	my $p = proxy_for('many', $sink->port, 1000000);
	my $c = client($p->port);
	my $n = 3000;
	my @rcpts = map { $_ % 100 == 0 ? "good$_\@example.test" : "bad$_\@example.test" } 1 .. $n;
	my $batch = "MAIL FROM:<m\@client.test>\r\n";
	$c->send($batch);
	reply_ok($c->read_reply, 250, undef, 'MAIL');
	my ($ok, $refused) = (0, 0);
	for (my $i = 0; $i < @rcpts; $i += 100) {
		my @b = @rcpts[$i .. $i + 99];
		$c->send(join('', map { "RCPT TO:<$_>\r\n" } @b));
		for (@b) {
			my $code = $c->read_reply->{code} // 0;
			$ok++ if $code == 250;
			$refused++ if $code == 554;
		}
	}
	is($ok, $n / 100, 'the good recipients accepted');
	is($refused, $n - $n / 100, 'the others refused by the filter');
	my $id = "many-$$";
	$c->send("DATA\r\n");
	reply_ok($c->read_reply, 354, undef, 'DATA');
	$c->send(make_message(id => $id, subject => 'many') . ".\r\n");
	reply_ok($c->read_reply, 250, undef, 'the message is accepted');
	$c->quit;
	my @m = $sink->wait_find(qr/^Message-ID: <\Q$id\E\@client\.test>$/m, 60);
	is(scalar @m, 1, 'it reached the backend once');
	my @env = map { /<([^>]+)>/ ? $1 : $_ } @{ $m[0]{rcpt} || [] };
	is_deeply([sort @env], [sort grep { /^good/ } @rcpts], 'to the good recipients, all of them');
	$p->stop_ok('proxy');
}

done_testing();
