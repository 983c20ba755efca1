# 26-exim-client.t - clients that half-close: a raw one, and Exim sending
# through the proxy.
#
# Exim 4.96 pipelines QUIT after the end of its last message and shuts down
# its sending side (shutdown(SHUT_WR)) before it reads the replies.  The
# proxy must answer every command it read before that EOF, in order, as
# Postfix does (it meets the EOF only when it reads past them), and then
# close.  Had it stopped writing at the FIN, Exim would see no reply,
# defer, and deliver the message a second time on its retry.
#
# Raw part: EHLO, NOOP, QUIT and SHUT_WR get three replies (the same codes
# a private Postfix gives, when root may start one); a message whose end of
# data (DATA; BDAT LAST turned into DATA; BDAT LAST relayed to Postfix)
# and a QUIT come before the FIN gets its 250 and is delivered once.
#
# Exim part: Exim as the sending client, through a proxy in front of
# Postfix (CHUNKING relayed) and one in front of smtp-sink (BDAT turned into
# DATA), in plaintext and with STARTTLS, 20 messages each: each delivered
# exactly once, Exim's log showing Completed and no defer.
use strict;
use warnings;

use File::Path qw(make_path);
use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $dir = tmpdir();
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
    . "-subj /CN=proxy.test >/dev/null 2>&1") == 0 or die "openssl req failed\n";

# Backend without CHUNKING: the proxy offers it and turns BDAT into DATA.
my $sink = start_sink(name => 'sink');
my $conv = start_proxy(<<"EOF", name => 'convert');
backend = "127.0.0.1:@{[ $sink->port ]}";
ehlo { add = [ "CHUNKING" ]; }
tls { cert = "$cert"; key = "$key"; }
timeout { shutdown = 5; }
EOF

# Backend with CHUNKING (Postfix, relaying to a second sink): BDAT relayed.
my ($relayed_sink, $pf, $relay);
if ($> == 0) {
	$relayed_sink = start_sink(name => 'behind-postfix');
	$pf = start_postfix(relay_port => $relayed_sink->port);
	$relay = start_proxy(<<"EOF", name => 'relay');
backend = "127.0.0.1:@{[ $pf->port ]}";
tls { cert = "$cert"; key = "$key"; }
timeout { shutdown = 5; }
EOF
}

# Connect, read the greeting, send bytes, shut down the sending side, and
# read every reply until the server closes.  Returns the replies.
sub half_close {
	my ($port, $bytes, %o) = @_;
	my $c = smtp_connect($port) or die "connect: $@\n";
	my @r = ($c->read_reply);
	if ($o{before_fin}) {
		$o{before_fin}->($c, \@r);
	}
	$c->send($bytes);
	$c->socket->shutdown(1);
	for (1 .. 50) {
		my $r = $c->read_reply;
		last if $r->{eof} || $r->{timeout};
		push @r, $r;
	}
	ok($c->{eof}, "$o{what}: the server closes after the last reply");
	$c->close;
	return @r;
}

sub codes { join ' ', map { $_->{code} // 'none' } @_ }

my $n = 0;
sub uid { sprintf('hc-%d-%d', $$, ++$n) }

# --- EHLO, NOOP, QUIT, then SHUT_WR: three replies
{
	my @r = half_close($conv->port, "EHLO x\r\nNOOP\r\nQUIT\r\n", what => 'EHLO NOOP QUIT');
	is(codes(@r), '220 250 250 221', 'EHLO, NOOP, QUIT then EOF: every reply, in order');
	if ($pf) {
		my @d = half_close($pf->port, "EHLO x\r\nNOOP\r\nQUIT\r\n", what => 'Postfix directly');
		is(codes(@r), codes(@d), 'the same replies as Postfix itself gives');
	}
	# Pipelined before the greeting even: answered after it.
	my $c = smtp_connect($conv->port) or die "connect: $@\n";
	$c->send("EHLO early\r\nQUIT\r\n");
	$c->socket->shutdown(1);
	my @e = map { $c->read_reply } 1 .. 3;
	is(codes(@e), '220 250 221', 'sent before the greeting, then EOF: still answered');
	ok($c->wait_closed, 'and closed');
	$c->close;
	# An unfinished command line at the EOF is not a command.
	@r = half_close($conv->port, "EHLO x\r\nNOOP", what => 'unfinished line');
	is(codes(@r), '220 250', 'a line without its CRLF at the EOF: ignored');
	ok($conv->wait_log(qr/client disconnected after an unfinished command line \(4 octets/),
	    'and logged as such');
}

# The message is at the backend exactly once (its Subject is its id).
sub delivered_once {
	my ($s, $id, $what) = @_;
	ok($s->wait_find(qr/^Subject: \Q$id\E\r?$/m), "$what: delivered");
	is(scalar($s->find(qr/^Subject: \Q$id\E\r?$/m)), 1, "$what: exactly once");
}

# --- DATA's end of data and QUIT before the FIN
{
	my $id = uid();
	my $m = make_message(subject => $id);
	my @r = half_close($conv->port, "$m.\r\nQUIT\r\n", what => 'DATA then EOF', before_fin => sub {
		my ($c, $r) = @_;
		push @$r, $c->ehlo('data.test'), $c->cmd('MAIL FROM:<hc@client.test>'),
		    $c->cmd('RCPT TO:<r@example.test>'), $c->cmd('DATA');
	});
	is(codes(@r), '220 250 250 250 354 250 221', 'DATA: the end of data gets its 250, QUIT its 221');
	delivered_once($sink, $id, 'DATA');
}

# --- BDAT LAST (turned into DATA) and QUIT in one write, then the FIN
{
	my $id = uid();
	my $m = make_message(subject => $id);
	my @r = half_close($conv->port, "EHLO x\r\nMAIL FROM:<hc\@client.test>\r\nRCPT TO:<r\@example.test>\r\n"
	    . 'BDAT ' . length($m) . " LAST\r\n$m" . "QUIT\r\n", what => 'BDAT into DATA then EOF');
	is(codes(@r), '220 250 250 250 250 221', 'BDAT turned into DATA: 250 for the message, 221');
	delivered_once($sink, $id, 'BDAT turned into DATA');
	unlike($conv->log_text, qr/dropping it/, 'the log says nothing was dropped');
}

# --- relayed BDAT (Postfix has CHUNKING): two chunks and QUIT, then the FIN
SKIP: {
	skip 'a private Postfix needs root', 4 unless $pf;
	my $id = uid();
	my $m = make_message(subject => $id);
	my $h = int(length($m) / 2);
	my @r = half_close($relay->port, "EHLO x\r\nMAIL FROM:<hc\@client.test>\r\nRCPT TO:<r\@example.test>\r\n"
	    . "BDAT $h\r\n" . substr($m, 0, $h) . 'BDAT ' . (length($m) - $h) . " LAST\r\n"
	    . substr($m, $h) . "QUIT\r\n", what => 'relayed BDAT then EOF');
	is(codes(@r), '220 250 250 250 250 250 221', 'relayed BDAT: every chunk answered, then 221');
	delivered_once($relayed_sink, $id, 'relayed BDAT');
}

# --- EOF in the middle of a message: dropped, and logged so
{
	my $id = uid();
	my $m = make_message(subject => $id);
	my @r = half_close($conv->port, "EHLO x\r\nMAIL FROM:<hc\@client.test>\r\nRCPT TO:<r\@example.test>\r\n"
	    . 'BDAT ' . (length($m) + 10) . " LAST\r\n$m", what => 'EOF inside a chunk');
	is(codes(@r), '220 250 250 250', 'EOF inside a chunk: the commands before it answered');
	ok($conv->wait_log(qr/client disconnected in the middle of a message/), 'the message is dropped, and logged so');
	is(scalar($sink->find(qr/^Subject: \Q$id\E\r?$/m)), 0, 'nothing of it delivered');
}

# ---------------------------------------------------------------------------
# Exim as the sending client
SKIP: {
	my $why = exim_missing() || (!$pf && 'a private Postfix needs root');
	skip $why, 1 if $why;
	my $count = 20;
	for my $case (['relay', $relay, $relayed_sink, 0], ['relay', $relay, $relayed_sink, 1],
	    ['convert', $conv, $sink, 0], ['convert', $conv, $sink, 1]) {
		my ($what, $proxy, $backend, $tls) = @$case;
		my $name = "exim-$what-" . ($tls ? 'tls' : 'plain');
		my $x = exim_sender($name, $proxy->port, $tls);
		my $logpos = length $proxy->log_text;
		my @ids;
		for my $i (1 .. $count) {
			my $id = uid();
			push @ids, $id;
			my $m = make_message(subject => $id, from => 'exim@sender.test', to => 'r@example.test',
			    body => "message $i of $count\r\n.a dotted line\r\n");
			my $out = $x->send_one($m, 'r@example.test');
			is($out, '', "$name: message $i: exim -odi says nothing") or diag($out);
		}
		# A forced queue run: what Exim had deferred would go again now
		# (that is how a lost reply became a second copy).
		my $q = $x->queue_run;
		is($q, '', "$name: a forced queue run finds nothing to do") or diag($q);
		my $log = $x->mainlog;
		my $completed = () = $log =~ /^\S+ \S+ \S+ Completed$/mg;
		is($completed, $count, "$name: Exim logged Completed for every message") or diag($log);
		unlike($log, qr/ == |defer/, "$name: and no defer") or diag($log);
		my @out = $log =~ /^.* => r\@example\.test .*$/mg;
		is(scalar(grep { / X=TLS/ } @out), $tls ? $count : 0,
		    "$name: every delivery " . ($tls ? 'over TLS' : 'in plaintext'));
		$backend->wait_find(qr/^Subject: \Q$ids[-1]\E\r?$/m);
		my @dup = grep { scalar($backend->find(qr/^Subject: \Q$_\E\r?$/m)) != 1 } @ids;
		is("@dup", '', "$name: each of the $count messages is at the backend exactly once");
		unlike(substr($proxy->log_text, $logpos), qr/dropping it/, "$name: the proxy dropped nothing");
	}
	$_->stop_ok for $relay, $conv;
}

# An Exim that only sends: everything to 127.0.0.1 on the proxy's port, in
# plaintext or with STARTTLS required; one delivery per submission (-odi).
sub exim_sender {
	my ($name, $port, $tls) = @_;
	my $top = tmpdir() . "/$name";
	my ($spool, $logdir) = ("$top/spool", "$top/log");
	make_path($spool, $logdir);
	chmod 0755, $top;
	my ($uid, $gid) = (getpwnam('Debian-exim'))[2, 3];
	chown $uid, $gid, $spool, $logdir;
	my $tlsopt = $tls
	    ? "hosts_require_tls = *\n  tls_verify_hosts =\n  tls_try_verify_hosts =\n"
	    : "hosts_avoid_tls = *\n";
	my $conf = spew("$top/exim.conf", <<"EOF", 0644);
# exim.conf written by 26-exim-client.t: a sending Exim
primary_hostname = sender.test
spool_directory = $spool
log_file_path = $logdir/%slog
log_selector = +tls_cipher
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
queue_only_override = true

begin routers
to_proxy:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = to_proxy

begin transports
to_proxy:
  driver = smtp
  port = $port
  allow_localhost
  hosts_try_chunking = *
  hosts_try_fastopen =
  $tlsopt
begin retry
*   *   F,1h,10m
EOF
	return bless { conf => $conf, logdir => $logdir }, 'EximSender';
}

package EximSender;

# Submit one message and deliver it at once; returns what exim printed.
sub send_one {
	my ($self, $msg, $to) = @_;
	my $file = "$self->{logdir}/../msg";
	(my $lf = $msg) =~ s/\r\n/\n/g;
	SmtpChainTest::spew($file, $lf);
	my $out = `/usr/sbin/exim4 -C $self->{conf} -odi -f exim\@sender.test $to < $file 2>&1`;
	my $rc = $?;
	$out =~ s/^.* exim user lost privilege for using -C option\n//mg;	# as root: expected
	return $out . ($rc ? "exit status $rc" : '');
}

# Deliver whatever is queued, deferred or not (-qff), in the foreground.
sub queue_run {
	my ($self) = @_;
	my $out = `/usr/sbin/exim4 -C $self->{conf} -qff 2>&1`;
	my $rc = $?;
	$out =~ s/^.* exim user lost privilege for using -C option\n//mg;
	return $out . ($rc ? "exit status $rc" : '');
}

sub mainlog { SmtpChainTest::slurp("$_[0]{logdir}/mainlog") // '' }

package main;

$pf->stop if $pf;
done_testing;
