# 38-tls-tickets.t - TLS session ticket keys are rotated, as Postfix's
# tlsmgr does: a new key every tls.ticket_key_rotation seconds and at each
# reload, the previous one kept for decryption for one more period.  A
# ticket from before one rotation still resumes; one from before two does
# not (a full handshake).  Every wait is for the master's log line saying a
# key was made, never a guess at a time.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};

my $dir = tmpdir();
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $key -out $cert -days 2 "
    . "-subj /CN=proxy.test >/dev/null 2>&1") == 0 or die "openssl req failed\n";
my $sink = start_sink(verbose => 0);
my $bport = $sink->port;
my $limit = int(20 * $SmtpChainTest::TIME_SCALE);

# One STARTTLS session with TLS 1.3 (TLS 1.2 with -tls1_2), saving its
# session (ticket) or resuming one: "New" or "Reused", as s_client says.
sub tls_session {
	my ($port, %o) = @_;
	my $flag = $o{flag} // '-tls1_3';
	my $io = $o{out} ? "-sess_out $o{out}" : "-sess_in $o{in}";
	my $out = `printf 'QUIT\\r\\n' | timeout $limit openssl s_client $flag -starttls smtp -connect 127.0.0.1:$port $io -ign_eof 2>&1`;
	return $out =~ /^(New|Reused), TLSv1\.[23], /m ? $1 : "neither: $out";
}
sub keys_made { my ($p) = @_; scalar(() = $p->log_text =~ /TLS session ticket key \d+ made/g) }

# Rotation at reload, with a period too long to interfere.
{
	my $p = start_proxy(<<"EOF", name => 'reload');
backend = "127.0.0.1:$bport";
workers = 2;
tls { cert = "$cert"; key = "$key"; ticket_key_rotation = 86400; }
EOF
	my $port = $p->port;
	for my $v (['TLSv1.3', '-tls1_3'], ['TLSv1.2', '-tls1_2']) {
		my ($name, $flag) = @$v;
		my $s = "$dir/$name.sess";
		is(tls_session($port, flag => $flag, out => $s), 'New', "$name: a first session, its ticket saved");
		is(tls_session($port, flag => $flag, in => $s), 'Reused', "$name: it resumes");
		my $made = keys_made($p);
		kill 'HUP', $p->pid;
		ok(wait_until(sub { keys_made($p) > $made }, 60), "$name: a reload makes a new key")
		    or diag($p->log_tail);
		like($p->wait_log(qr/(TLS session ticket key \d+ made \(reload\)[^\n]*)/) // '', qr/previous one still decrypts/,
		    "$name: logged");
		ok(wait_until(sub { $p->log_text =~ /info: reloaded: / && keys_made($p) > $made }, 60),
		    "$name: the reload is done");
		is(tls_session($port, flag => $flag, in => $s), 'Reused',
		    "$name: a ticket from before one rotation still resumes (the previous key)");
		$made = keys_made($p);
		kill 'HUP', $p->pid;
		ok(wait_until(sub { keys_made($p) > $made }, 60), "$name: a second reload, a second new key");
		is(tls_session($port, flag => $flag, in => $s), 'New',
		    "$name: a ticket from before two rotations does not resume: a full handshake");
	}
	$p->stop_ok('reload: the proxy exits 0');
}

# Rotation by time: a new key every second.  A ticket is older than two
# rotations once two keys were made after the session that got it.
{
	my $p = start_proxy(<<"EOF", name => 'period');
backend = "127.0.0.1:$bport";
tls { cert = "$cert"; key = "$key"; ticket_key_rotation = 1; }
EOF
	my $port = $p->port;
	ok(wait_until(sub { keys_made($p) >= 2 }, 60), 'tls.ticket_key_rotation = 1: keys are made by time')
	    or diag($p->log_tail);
	like($p->log_text, qr/TLS session ticket key \d+ made \(tls\.ticket_key_rotation\)/, 'logged as such');
	my $s = "$dir/period.sess";
	is(tls_session($port, out => $s), 'New', 'a session, its ticket saved');
	my $made = keys_made($p);
	ok(wait_until(sub { keys_made($p) >= $made + 2 }, 60), 'two more keys made since');
	is(tls_session($port, in => $s), 'New', 'the ticket, older than two rotations, does not resume');
	$p->stop_ok('period: the proxy exits 0');
}

done_testing;
