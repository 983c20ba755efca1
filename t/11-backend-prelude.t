# 11-backend-prelude.t - the proxy's own EHLO before XCLIENT, remembered.
#
# After one session's prelude (greeting, our EHLO, XCLIENT) the proxy
# remembers, per worker and for a minute, that the backend offers XCLIENT
# and sends it right after the greeting (Postfix takes XCLIENT at any time
# outside a transaction; t/20-postfix.t checks that).  A backend that wants
# EHLO before XCLIENT must still get the real client: it refuses, the
# proxy sends EHLO and XCLIENT again, and from then on EHLO first.  No such
# backend is installed here (Exim's XCLIENT is in 4.98 and later), so a
# small SMTP server written here plays it: XCLIENT before EHLO gets 503,
# after EHLO a new 220 naming the address; every line is recorded.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $dir = tmpdir();
my $fake_src = <<'EOF';
use strict; use warnings; use IO::Socket::IP;
my ($port, $log) = @ARGV;
my $l = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port, Listen => 16,
    ReuseAddr => 1) or die "listen: $!";
$SIG{ALRM} = sub { exit 0 };
alarm 120;
for (1 .. 100) {
	my $c = $l->accept or next;
	$c->autoflush(1);
	open(my $fh, '>>', $log) or die; $fh->autoflush(1);
	print $fh "connect\n";
	print $c "220 strict.test ESMTP\r\n";
	my $ehlo = 0;
	while (my $line = <$c>) {
		$line =~ s/\r?\n\z//;
		print $fh "$line\n";
		if ($line =~ /^EHLO/i) {
			$ehlo = 1;
			print $c "250-strict.test\r\n250-PIPELINING\r\n250 XCLIENT ADDR NAME PORT\r\n";
		} elsif ($line =~ /^XCLIENT .*ADDR=(\S+)/i) {
			if ($ehlo) { $ehlo = 0; print $c "220 strict.test ESMTP for $1\r\n" }
			else { print $c "503 5.5.1 Error: send EHLO first\r\n" }
		} elsif ($line =~ /^DATA/i) {
			print $c "354 go ahead\r\n";
			while (my $d = <$c>) { last if $d =~ /^\.\r?\n\z/ }
			print $c "250 2.0.0 queued\r\n";
		} elsif ($line =~ /^QUIT/i) {
			print $c "221 2.0.0 bye\r\n";
			last;
		} else {
			print $c "250 2.0.0 ok\r\n";
		}
	}
	print $fh "closed\n";
	close $c;
}
EOF
SmtpChainTest::spew("$dir/strict.pl", $fake_src);
my $port = SmtpChainTest::free_port();
my $log = "$dir/strict.log";
my $pid = SmtpChainTest::spawn(argv => [$^X, "$dir/strict.pl", $port, $log], output => "$dir/strict.out");
SmtpChainTest::on_cleanup("strict backend $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 5) });
wait_until(sub { SmtpChainTest::port_listening($port) }, 10) or BAIL_OUT('the scripted backend did not start');

my $proxy = start_proxy(<<"EOF");
backend = "127.0.0.1:$port";
workers = 1;
timeout { shutdown = 5; }
EOF

for my $i (1 .. 3) {
	my $c = smtp_connect($proxy->port, local_addr => "127.0.0.$i");
	my $g = $c->read_reply;
	is($g->{raw}, "220 strict.test ESMTP for 127.0.0.$i\r\n",
	    "session $i: the greeting is the backend's answer to XCLIENT with 127.0.0.$i");
	reply_ok($c->ehlo('client.test'), 250, undef, "session $i: EHLO");
	my $r = $c->send_mail(from => 'a@client.test', to => 'b@example.test',
	    data => make_message(subject => "strict $i"));
	reply_ok($r->{end}, 250, '2.0.0', "session $i: the message is accepted");
	reply_ok($c->quit, 221, undef, "session $i: QUIT");
}
wait_until(sub { (() = (SmtpChainTest::slurp($log) // '') =~ /^closed$/mg) >= 3 }, 10);

# Each connection's commands up to the client's EHLO.
my @conn = map { [ grep { length } split /\n/ ] } split /^connect\n/m, SmtpChainTest::slurp($log) // '';
shift @conn while @conn && !@{ $conn[0] };
my @prelude = map { my @c; for (@$_) { last if /^EHLO client/; push @c, /^(\S+)/ } join(' ', @c) } @conn;
is_deeply(\@prelude, ['EHLO XCLIENT', 'XCLIENT EHLO XCLIENT', 'EHLO XCLIENT'],
    'first session EHLO then XCLIENT; the second tries XCLIENT at once, is refused and '
    . 'sends EHLO and XCLIENT; the third sends EHLO first again') or diag(SmtpChainTest::slurp($log));
ok($proxy->wait_log(qr/(refused XCLIENT before EHLO, sending EHLO first)/),
    'the log says why the second session sent EHLO after all') or diag($proxy->log_tail);

$proxy->stop_ok;
done_testing;
