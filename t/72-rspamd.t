# 72-rspamd.t - rspamd (Debian's, 3.4) through the milter module, compared
# with the same rspamd behind a private Postfix.
#
# rspamd runs offline: only its rspamd_proxy worker, in milter mode with
# self_scan, no Lua rules but the milter_headers plugin (X-Rspamd-Queue-Id,
# Authentication-Results inserted at index 1, X-Spam-Status; the forged
# ones removed) and a prefilter of our own (rspamd.local.lua) for soft
# reject, discard and quarantine; enable_test_patterns makes its GTUBE
# variants give reject, add header and rewrite subject; DNS goes to a
# loopback port nobody answers on.
#
# Each message goes through the proxy (whose backend is a plain private
# Postfix, so that both paths put Postfix's Received: on top) and through a
# private Postfix with rspamd as its milter, into one smtp-sink; the test
# compares the client's replies (code, enhanced code, text; the queue id
# aside), the header section in order, the body and the envelope, and
# checks rspamd's log for errors.
use strict;
use warnings;

use Test::More;
use SmtpChainTest;
use SmtpChainTest::MilterCompare;

plan skip_all => 'SMTPCHAIN is not set (run through make check)' unless $ENV{SMTPCHAIN};
plan skip_all => 'a private Postfix needs root' unless $> == 0;
my $build = $ENV{SMTPCHAIN_BUILDDIR} or plan skip_all => 'SMTPCHAIN_BUILDDIR is not set';
my $module = "$build/filters/milter/.libs/milter.so";
plan skip_all => "$module is not built" unless -f $module;
my $rspamd = SmtpChainTest::find_program('rspamd');
my $plugin = '/usr/share/rspamd/plugins/milter_headers.lua';
plan skip_all => 'rspamd is needed (apt-get install rspamd)' unless $rspamd && -f $plugin;

my $dir = tmpdir();
my $qdir = "$dir/quarantine";
mkdir $qdir;

# --- rspamd
my $rport = free_port();
my $rlog = "$dir/rspamd.log";
spew("$dir/rspamd.local.lua", <<'EOF');
-- Verdicts the test asks for by a word of the Subject.
rspamd_config:register_symbol({
  name = 'SMTPCHAIN_TEST', type = 'prefilter', priority = 10,
  callback = function(task)
    local subject = task:get_subject() or ''
    if subject:find('SOFTREJECT', 1, true) then
      task:set_pre_result('soft reject', 'Try again later, please', 'SMTPCHAIN_TEST')
    elseif subject:find('DISCARDME', 1, true) then
      task:set_pre_result('discard', 'Discarded', 'SMTPCHAIN_TEST')
    elseif subject:find('QUARANTINEME', 1, true) then
      task:set_pre_result('quarantine', 'Held', 'SMTPCHAIN_TEST')
    end
  end
})
EOF
spew("$dir/rspamd.conf", <<"EOF");
options {
	pidfile = "$dir/rspamd.pid";
	filters = "";
	enable_test_patterns = true;
	disable_hyperscan = true;
	hs_cache_dir = "$dir";
	dns { nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }
}
logging { type = "file"; filename = "$rlog"; level = "info"; }
lua = "$dir/rspamd.local.lua";
actions {
	reject = 15; add_header = 6; rewrite_subject = 8;
	discard { flags = ["no_threshold"]; }
	quarantine { flags = ["no_threshold"]; }
}
modules { path = "$plugin"; }
milter_headers {
	skip_local = false;
	skip_authenticated = false;
	use = ["x-rspamd-queue-id", "authentication-results", "x-spam-status"];
	routines {
		authentication-results { remove = 1; }
		x-spam-status { remove = 1; }
	}
}
worker "rspamd_proxy" {
	bind_socket = "127.0.0.1:$rport";
	milter = yes;
	timeout = 120s;
	count = 1;
	upstream "local" { default = yes; self_scan = yes; }
}
EOF

# Start rspamd; waits (bounded, no fixed sleep) until its proxy worker runs.
my $rpid;
sub start_rspamd {
	my $before = length(slurp($rlog) // '');
	$rpid = SmtpChainTest::spawn(argv => [$rspamd, '-f', '-i', '-u', 'root', '-g', 'root',
	    '-c', "$dir/rspamd.conf", '--var', "DBDIR=$dir", '--var', "RUNDIR=$dir"],
	    output => "$dir/rspamd.out", env => { TMPDIR => $dir });
	my $pid = $rpid;
	SmtpChainTest::on_cleanup("rspamd $pid", sub { SmtpChainTest::stop_pid($pid, 'TERM', 20) });
	wait_until(sub {
		!proc_alive($pid) || (SmtpChainTest::port_listening($rport) &&
		    substr(slurp($rlog) // '', $before) =~ /rspamd_worker_hyperscan_ready|starting rspamd_proxy process/)
	}, 240, 0.2);
	die "rspamd did not start: " . (slurp("$dir/rspamd.out") // '') . (slurp($rlog) // '') . "\n"
	    unless proc_alive($pid) && SmtpChainTest::port_listening($rport);
}
start_rspamd();

# --- the sink, a plain Postfix behind the proxy, a Postfix with rspamd
# The proxy has the name of the Postfix it stands for (rspamd's
# Authentication-Results names the MTA by the j macro).
my ($sink, $backend, $pm, $p) = SmtpChainTest::MilterCompare::start_mtas(
    milter => "inet:127.0.0.1:$rport", postfix_name => 'postfix-rspamd', module => $module, dir => $dir,
    main => "milter_mail_macros = i {mail_addr} {client_addr} {client_name} {auth_authen}\n",
    conf => qq{quarantine_dir = "$qdir";\n});

my $GTUBE = 'JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

# A message; the Subject carries the words and a tag.
sub message {
	my ($words, %o) = @_;
	# A GTUBE variant goes into the body, where rspamd looks for it.
	if ($words =~ /^([XYZ])JS\*/) {
		$o{body} = "Hello.\r\n$words\r\n";
		$words = "gtube-$1";
	}
	return SmtpChainTest::MilterCompare::tagged_message($words, %o);
}

# The comparison (t/lib/SmtpChainTest/MilterCompare.pm): rspamd's queue id
# aside; a 250 for a discarded or quarantined message delivers nothing.
my $mc = SmtpChainTest::MilterCompare->new(proxy => $p, postfix => $pm, sink => $sink,
    message => \&message,
    header => sub { my ($n, $v) = @_; $n eq 'X-Rspamd-Queue-Id' ? 'QID' : $v },
    delivers => sub { $_[0] !~ /DISCARDME|QUARANTINEME/ });

# --- every verdict, one message per session
my @one = $mc->compare('verdicts', 'clean', "X$GTUBE", "Y$GTUBE", "Z$GTUBE", 'SOFTREJECT', 'DISCARDME',
    'QUARANTINEME');
like($one[0]{raw_reply}{raw} // '', qr/^250 /, 'clean: 250');
my ($qid) = ($one[0]{m} ? $one[0]{m}{message} : '') =~ /^X-Rspamd-Queue-Id: (\S+)$/m;
like($qid // '', qr/^[0-9A-F]+\.1$/, 'clean: X-Rspamd-Queue-Id is the message\'s id ({i})');
like($p->log_text, qr/msgid=\Q${\($qid \/\/ '?')}\E .*status=sent/, 'clean: the same id on the proxy\'s summary line');
like($one[1]{raw_reply}{raw} // '', qr/^5\d\d /, 'GTUBE: refused');
like($one[5]{raw_reply}{raw} // '', qr/^250 2\.0\.0 Ok: queued as /, 'discard: told as a relayed message');
like($p->wait_log(qr/(status=discarded[^\n]*)/) // '', qr/filter=milter/, 'discard: the log says discarded');
like($one[6]{raw_reply}{raw} // '', qr/^250 2\.0\.0 Ok: queued as /, 'quarantine: told as a relayed message');
ok(scalar(glob("$qdir/*.eml")), 'quarantine: the message is in quarantine_dir');
like($pm->maillog, qr/milter-hold/, 'quarantine: Postfix holds it (milter-hold)');

# --- a 700 KB body, forged headers rspamd removes
$mc->compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
$mc->compare('forged', ['clean forged', headers => "Authentication-Results: postfix.test; dkim=pass forged\r\n" .
    "X-Spam-Status: No, forged\r\n"]);

# --- a mixed session: refused and accepted messages, one connection
$mc->compare('mixed', "X$GTUBE", 'clean', 'SOFTREJECT', 'clean', 'DISCARDME', 'clean');

# --- 20 messages in one session: each its own id
{
	my @msgs = map { [$mc->message('clean twenty')] } 1 .. 20;
	my $r = $mc->session($p->port, @msgs);
	my @ids;
	for my $m (@msgs) {
		my ($d) = $sink->wait_find(qr/\Q$m->[0]\E/, 60);
		push @ids, $d && $d->{message} =~ /^X-Rspamd-Queue-Id: (\S+)$/m ? $1 : '-';
	}
	my %distinct = map { $_ => 1 } @ids;
	is(scalar(keys %distinct), 20, 'twenty messages, one session: twenty distinct X-Rspamd-Queue-Id')
	    or diag("@ids");
	my ($sid) = $ids[0] =~ /^([0-9A-F]+)\./;
	is_deeply(\@ids, [map { ($sid // '?') . ".$_" } 1 .. 20], 'twenty messages: SESSIONID.1 to .20');
}

# --- clients that connect and leave at once: rspamd logs no error
{
	my $before = length(slurp($rlog) // '');
	# A session after them: its end shows the three were handled before.
	$mc->dropped_clients([$mc->message('clean after drops')]);
	wait_until(sub { $p->log_text =~ /closing session/ && (() = $p->log_text =~ /closing session/g) >= 1 }, 10);
	my $new = substr(slurp($rlog) // '', $before);
	unlike($new, qr/abnormally closing|Unexpected EOF|error/i,
	    'clients that connect and leave: no error in rspamd\'s log (no bare EOF)') or diag($new);
}

# --- rspamd's own log: no error or warning for the proxy's sessions
unlike(slurp($rlog) // '', qr/abnormally closing milter|cannot read milter|milter.*error/i,
    'rspamd logged no milter error');

# --- rspamd stopped: the same answers as Postfix's (220, EHLO, then 451 at MAIL)
{
	SmtpChainTest::stop_pid($rpid, 'TERM', 20);
	my $got = $mc->milter_stopped('rspamd', 'sender@client.test');
	is($got->{proxy}[2], "451 4.7.1 Service unavailable - try again later\r\n", 'rspamd stopped: 451 4.7.1 at MAIL');
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
