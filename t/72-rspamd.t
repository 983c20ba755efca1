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
our $sink = start_sink();
my $backend = start_postfix(name => 'backend', relay_port => $sink->port);
my $pm = start_postfix(name => 'postfix-rspamd', relay_port => $sink->port,
    main => "smtpd_milters = inet:127.0.0.1:$rport\nmilter_default_action = tempfail\n" .
	"milter_protocol = 6\nmilter_mail_macros = i {mail_addr} {client_addr} {client_name} {auth_authen}\n");
# The proxy has the name of the Postfix it stands for (rspamd's
# Authentication-Results names the MTA by the j macro).
my $p = start_proxy(qq{backend = "127.0.0.1:${\ $backend->port}";\nquarantine_dir = "$qdir";\n} .
    qq{hostname = "postfix.test";\n} .
    qq{workers = 1;\nspool_dir = "$dir";\nlog { level = "debug"; }\ntimeout { shutdown = 5; }\n} .
    qq{filter {\n\tmodule = "$module";\n\tsocket = "inet:127.0.0.1:$rport";\n}\n}, name => 'proxy');

my $seq = 0;
my $GTUBE = 'JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

# A message; the Subject carries the words and a tag.
sub message {
	my ($words, %o) = @_;
	my $tag = sprintf('r%d-%d', $$, ++$seq);
	my $body = $o{body} // "Hello.\r\nSecond line.\r\n";
	# A GTUBE variant goes into the body, where rspamd looks for it.
	if ($words =~ /^([XYZ])JS\*/) {
		$body = "Hello.\r\n$words\r\n";
		$words = "gtube-$1";
	}
	my $text = "Received: from upstream.example (upstream.example [192.0.2.1])\r\n" .
	    "\tby mx.upstream.example; Tue, 24 Nov 2026 07:59:00 +0000\r\n" .
	    "From: <sender\@client.test>\r\nTo: <rcpt\@example.test>\r\n" .
	    "Subject: $words $tag\r\nDate: Tue, 24 Nov 2026 08:00:00 +0000\r\n" .
	    "Message-ID: <$tag\@client.test>\r\n" . ($o{headers} // '') . "\r\n$body";
	return ($tag, $text);
}

# The headers of a delivered message as "Name: value" (unfolded), in order;
# the Received: values and the queue ids are not compared.
sub headers_norm {
	my ($m, $tag) = @_;
	(my $text = $m->{message}) =~ s/\Q$tag\E/TAG/g;
	my ($head) = split /\n\n/, $text, 2;
	$head =~ s/\n[ \t]+/ /g;
	my @h;
	for (split /\n/, $head) {
		next unless /^([^:]+):\s?(.*)$/;
		my ($n, $v) = ($1, $2);
		$v = 'RECEIVED' if $n eq 'Received' && $v !~ /upstream/;
		$v = 'QID' if $n eq 'X-Rspamd-Queue-Id';
		push @h, "$n: $v";
	}
	return \@h;
}

sub body_of { (split /\n\n/, $_[0]{message}, 2)[1] // '' }

sub reply_norm {
	my ($r) = @_;
	return 'none' unless $r && $r->{code};
	(my $raw = $r->{raw}) =~ s/queued as \S+/queued as ID/g;
	return $raw;
}

# One session through port: greeting, EHLO, each message; returns the replies.
sub session {
	my ($port, @msgs) = @_;
	my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
	my %r = (greeting => $c->read_reply);
	$r{ehlo} = $c->ehlo('client.test');
	for my $m (@msgs) {
		push @{ $r{msgs} }, $c->send_mail(from => 'sender@client.test', to => ['rcpt@example.test'],
		    data => $m->[1]);
	}
	$c->quit;
	return \%r;
}

# The same messages (built from these words) through the proxy and through
# Postfix, in one session each; compares everything; returns the proxy's
# end replies and delivered messages.
sub compare {
	my ($what, @words) = @_;
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my @msgs = map { [message(ref $_ ? @$_ : $_)] } @words;
		my $r = session($port, @msgs);
		my @out;
		for my $i (0 .. $#msgs) {
			my ($tag) = @{ $msgs[$i] };
			my $end = $r->{msgs}[$i]{end};
			my $want = $end && $end->{code} && $end->{code} == 250 &&
			    (ref $words[$i] ? $words[$i][0] : $words[$i]) !~ /DISCARDME|QUARANTINEME/;
			my @m = $want ? $sink->wait_find(qr/\Q$tag\E/, 60) : ();
			push @out, { reply => reply_norm($end), tag => $tag, raw_reply => $end,
			    delivered => scalar(@m), m => $m[0],
			    headers => $m[0] ? headers_norm($m[0], $tag) : [],
			    body => $m[0] ? body_of($m[0]) : '',
			    env => $m[0] ? [$m[0]{mail}, @{ $m[0]{rcpt} }] : [] };
		}
		$got{$name} = \@out;
	}
	for my $i (0 .. $#words) {
		my ($a, $b) = ($got{proxy}[$i], $got{postfix}[$i]);
		my $w = ref $words[$i] ? $words[$i][0] : $words[$i];
		is($a->{reply}, $b->{reply}, "$what ($w): the client's reply as through Postfix");
		is($a->{delivered}, $b->{delivered}, "$what ($w): delivered as through Postfix");
		next unless $a->{delivered} && $b->{delivered};
		is_deeply($a->{headers}, $b->{headers}, "$what ($w): the header section, in order, as through Postfix")
		    or diag(explain($a->{headers}), explain($b->{headers}));
		is($a->{body}, $b->{body}, "$what ($w): the body as through Postfix");
		is_deeply($a->{env}, $b->{env}, "$what ($w): the envelope as through Postfix");
	}
	return @{ $got{proxy} };
}

# --- every verdict, one message per session
my @one = compare('verdicts', 'clean', "X$GTUBE", "Y$GTUBE", "Z$GTUBE", 'SOFTREJECT', 'DISCARDME',
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
compare('big', ['clean big', body => ("0123456789abcdefghijklmnopqrstuvwxyz.!?,;:-+*/=ABCDEFGHIJKLMNOPQRSTUVWX\r\n" x 10000)]);
compare('forged', ['clean forged', headers => "Authentication-Results: postfix.test; dkim=pass forged\r\n" .
    "X-Spam-Status: No, forged\r\n"]);

# --- a mixed session: refused and accepted messages, one connection
compare('mixed', "X$GTUBE", 'clean', 'SOFTREJECT', 'clean', 'DISCARDME', 'clean');

# --- 20 messages in one session: each its own id
{
	my @msgs = map { [message('clean twenty')] } 1 .. 20;
	my $r = session($p->port, @msgs);
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
	for (1 .. 3) {
		my $c = smtp_connect($p->port) or die "connect: $@\n";
		$c->close;
	}
	# A session after them: its end shows the three were handled before.
	my $r = session($p->port, [message('clean after drops')]);
	reply_ok($r->{msgs}[0]{end}, 250, undef, 'after three dropped clients: a message goes through');
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
	my %got;
	for my $via (['proxy', $p->port], ['postfix', $pm->port]) {
		my ($name, $port) = @$via;
		my $c = smtp_connect($port, timeout => 60) or die "connect: $@\n";
		my $g = $c->read_reply;
		my $e = $c->ehlo('client.test');
		my $m = $c->cmd('MAIL FROM:<sender@client.test>');
		$c->quit;
		$got{$name} = [map { $_ && $_->{code} ? $_->{code} : 0 } $g, $e];
		push @{ $got{$name} }, $m->{raw} // '';
	}
	is_deeply($got{proxy}, $got{postfix}, 'rspamd stopped: 220, EHLO, MAIL answered as by Postfix')
	    or diag(explain(\%got));
	is($got{proxy}[2], "451 4.7.1 Service unavailable - try again later\r\n", 'rspamd stopped: 451 4.7.1 at MAIL');
}

$p->stop_ok('proxy exits 0');
$pm->stop;
$backend->stop;
done_testing;
