# SmtpChainTest::DNS - a small authoritative DNS server for tests, and a way
# to run a program that resolves through it alone.
#
#   my $dns = SmtpChainTest::DNS->start(
#       records => { '_dmarc.example.org' => [ [TXT => 'v=DMARC1; p=reject'] ],
#                    'mx.example.org' => [ [A => '127.0.0.1'] ] });
#   my @cmd = $dns->wrap('opendmarc', '-f', '-c', $conf);   # for spawn()
#   ... $dns->queries ...                                    # "name TYPE" lines
#   $dns->stop;
#
# The server is Net::DNS::Nameserver (libnet-dns-perl) in a child process,
# on UDP and TCP at addr (a 127.0.0.0/8 address the test picks) and port
# (default 53: resolv.conf has no port).  Without addr, 127.53.X.Y from the
# test's pid, so that tests running at once never share a server.  It answers the names in records
# (case-insensitive, without the trailing dot) with the records of the
# asked type (ANY: all), NOERROR and no answer for a known name without
# that type, NXDOMAIN for any other name.  A record is [TYPE => DATA]:
# DATA is the text after the type in zone-file syntax (A "127.0.0.1",
# MX "10 mx.example.org"), except for TXT, where it is the string itself
# (no quoting; a list reference for several strings).  Every query is
# appended to queries.log in the test's directory.
#
# wrap() returns a command line that runs the command in a mount namespace
# of its own (unshare -m) where /etc/resolv.conf is a file naming only this
# server: the command resolves through it, the rest of the machine does
# not notice.  Needs root (as the tests that use it).
package SmtpChainTest::DNS;

use strict;
use warnings;
use POSIX qw(_exit);
use Net::DNS;
use Net::DNS::Nameserver;

use SmtpChainTest qw(tmpdir spew slurp);

sub start {
	my ($class, %o) = @_;
	# Net::DNS::Nameserver binds with SO_REUSEPORT: two runs on one address
	# and port would share it and get each other's queries.  Without addr,
	# an address of this test run's own, from its pid.
	my $addr = $o{addr} // sprintf('127.53.%d.%d', ($$ >> 8) & 255, $$ % 253 + 1);
	die "SmtpChainTest::DNS: $addr is not in 127.0.0.0/8\n" unless $addr =~ /^127\.\d+\.\d+\.\d+\z/;
	my $port = $o{port} || 53;
	my $dir = tmpdir();
	my $name = $o{name} || "dns-$addr";
	my %zone;
	while (my ($owner, $rrs) = each %{ $o{records} || {} }) {
		(my $n = lc $owner) =~ s/\.\z//;
		$zone{$n} = [ map { _rr($n, @$_) } @$rrs ];
	}
	my $log = "$dir/$name.queries.log";
	spew($log, '');
	my $handler = sub {
		my ($qname, $qclass, $qtype) = @_;
		(my $n = lc $qname) =~ s/\.\z//;
		if (open(my $fh, '>>', $log)) {
			print $fh "$n $qtype\n";
			close $fh;
		}
		return ('NXDOMAIN', [], [], [], { aa => 1 }) unless $zone{$n};
		my @ans = grep { $qtype eq 'ANY' || $_->type eq $qtype } @{ $zone{$n} };
		return ('NOERROR', \@ans, [], [], { aa => 1 });
	};
	# Bound here, so that the server is ready when start() returns.
	my $ns = Net::DNS::Nameserver->new(LocalAddr => [$addr], LocalPort => $port,
	    ReplyHandler => $handler, Verbose => 0)
	    or die "SmtpChainTest::DNS: cannot listen on $addr:$port\n";
	my $pid = fork();
	die "fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		setpgrp(0, 0);
		$SIG{$_} = 'DEFAULT' for qw(PIPE ALRM TERM INT);
		eval { $ns->main_loop; };
		_exit(0);
	}
	undef $ns;	# the parent's copies of the sockets
	my $resolv = spew("$dir/$name.resolv.conf",
	    "nameserver $addr\noptions timeout:2 attempts:2\n");
	my $self = bless { pid => $pid, addr => $addr, port => $port, log => $log,
	    resolv => $resolv }, $class;
	SmtpChainTest::on_cleanup("dns server $addr", sub { $self->stop });
	return $self;
}

# One record of the zone.
sub _rr {
	my ($owner, $type, $data) = @_;
	$type = uc $type;
	return Net::DNS::RR->new(owner => $owner, type => 'TXT', ttl => 60,
	    txtdata => ref $data ? $data : [$data]) if $type eq 'TXT';
	return Net::DNS::RR->new("$owner. 60 IN $type $data");
}

sub addr { $_[0]{addr} }
sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub resolv_conf { $_[0]{resolv} }

# The queries so far, as "name TYPE" lines.
sub queries {
	my ($self) = @_;
	return split /\n/, slurp($self->{log}) // '';
}

# A command line that runs @cmd with /etc/resolv.conf naming only this server.
sub wrap {
	my ($self, @cmd) = @_;
	return ('unshare', '-m', '--propagation', 'private', '--', 'sh', '-c',
	    'mount --bind "$0" /etc/resolv.conf && exec "$@"', $self->{resolv}, @cmd);
}

sub stop {
	my ($self) = @_;
	return unless $self->{pid};
	SmtpChainTest::stop_pid($self->{pid}, 'TERM', 10);
	$self->{pid} = undef;
}

1;
