#!/usr/bin/perl
# policy-dunno.pl - the bench's trivial Postfix policy server: answers
# every request "action=DUNNO", one process, any number of connections.
#
#	policy-dunno.pl PORT STATSFILE [--split]
#
# STATSFILE gets "connections N requests M" at each new connection and at
# exit, to show that the proxy keeps its connections.  --split writes each
# answer in two writes (the action line, then the empty line), Nagle on,
# as a server with buffered output flushed per line would: the case where
# a client that does not ACK at once waits for its delayed ACK.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;

my ($port, $stats, $split) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 256, ReuseAddr => 1)
    or die "127.0.0.1:$port: $!\n";
my $sel = IO::Select->new($srv);
my (%buf, $conns, $reqs);
($conns, $reqs) = (0, 0);
sub stats {
	open(my $f, '>', $stats) or return;
	print $f "connections $conns requests $reqs\n";
	close $f;
}
$SIG{TERM} = sub { stats(); exit 0 };
for (;;) {
	for my $fh ($sel->can_read) {
		if ($fh == $srv) {
			my $c = $srv->accept or next;
			$sel->add($c);
			$conns++;
			stats();
			next;
		}
		my $chunk;
		if (!sysread($fh, $chunk, 65536)) {
			$sel->remove($fh);
			delete $buf{$fh};
			close $fh;
			next;
		}
		$buf{$fh} .= $chunk;
		my $n = 0;
		$n++ while $buf{$fh} =~ s/\A.*?\n\n//s;
		next unless $n;
		$reqs += $n;
		if ($split) {
			for (1 .. $n) { syswrite($fh, "action=DUNNO\n"); syswrite($fh, "\n"); }
		} else {
			syswrite($fh, "action=DUNNO\n\n" x $n);
		}
	}
}
