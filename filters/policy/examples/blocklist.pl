#!/usr/bin/perl
# A Postfix policy server in 20 lines: refuses senders listed in a file.
#	blocklist.pl 127.0.0.1:10040 /etc/smtpchain/blocked-senders
#	filter { module = "policy"; server = "inet:127.0.0.1:10040"; steps = [ "mail" ]; }
use strict; use warnings; use IO::Socket::INET;
my ($addr, $file) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => $addr, Listen => 64, ReuseAddr => 1) or die "$addr: $!\n";
$SIG{CHLD} = 'IGNORE';				# one process per connection, as Postfix's spawn(8)
while (my $c = $srv->accept) {
	next if fork;
	my %attr;
	while (my $line = <$c>) {		# name=value lines; an empty line ends a request
		if ($line =~ /^([^=]*)=(.*)$/) { $attr{$1} = $2; next; }
		open(my $f, '<', $file) or die "$file: $!\n";
		my $blocked = grep { chomp; $_ ne '' && lc $_ eq lc $attr{sender} } <$f>;
		print $c $blocked ? "action=REJECT $attr{sender} is not welcome here\n\n" : "action=DUNNO\n\n";
		%attr = ();
	}
	exit 0;
}
