#!/usr/bin/perl
# contrib/demo.pl - run by contrib/demo.sh: Postfix on loopback, smtpchain in
# front of it, one message through both.  Uses the test harness to start and
# stop the real components (all on 127.0.0.1, stopped by pid at the end).
use strict;
use warnings;
use SmtpChainTest;

Test::More->builder->no_ending(1);	# a demo, not a test file

my $sink = start_sink(name => 'delivered');
my $postfix = start_postfix(relay_port => $sink->port);
# The workers run as the system account smtpchain (contrib/deps.sh made it),
# with their own quarantine and spool directories.
my (undef, undef, $uid, $gid) = getpwnam('smtpchain');
die "demo: no user smtpchain (useradd --system smtpchain, see README)\n" unless defined $uid;
my $dir = SmtpChainTest::tmpdir();
for my $d ("$dir/quarantine", "$dir/tmp") {
	mkdir($d, 0700);
	chown($uid, $gid, $d) or die "demo: chown $d: $!\n";
}
my $proxy = start_proxy(<<"CONF");
user = "smtpchain";
quarantine_dir = "$dir/quarantine";
spool_dir = "$dir/tmp";
backend = "127.0.0.1:${\ $postfix->port }";
log { level = "info"; transcript = true; }
ehlo { remove = [ "CHUNKING" ]; add = [ "X-DEMO" ]; }
CONF

print "Postfix listens on 127.0.0.1:", $postfix->port,
    ", smtpchain on 127.0.0.1:", $proxy->port, "\n\n";
my ($rc, $out) = swaks('--server', '127.0.0.1', '--port', $proxy->port,
    '--from', 'alice@client.example', '--to', 'bob@example.org',
    '--header', 'Subject: hello through smtpchain', '--body', "Hello, world.\n");
print "--- what the client saw (swaks) ---\n$out\n";
my ($msg) = $sink->wait_find(qr/hello through smtpchain/, 20);
print "--- the proxy's log (transcript) ---\n", $proxy->log_text, "\n";
print "--- the message as Postfix delivered it ---\n",
    (defined $msg ? $msg->{message} : "(not delivered)\n"), "\n";
print $rc == 0 && defined $msg ? "demo: ok\n" : "demo: FAILED\n";
exit($rc == 0 && defined $msg ? 0 : 1);
