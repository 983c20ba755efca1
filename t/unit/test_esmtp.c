/*
 * test_esmtp.c - unit tests for esmtp.c, which works on what the client was
 * offered (struct esmtp_offered) and the client's facts, not on a session:
 * a keyword offered or not (none before an EHLO's 250), the size limit (the
 * lower of ours and the offered SIZE), MAIL and RCPT parameters against the
 * offered list, when AUTH may be offered, and the identity read from a SASL
 * response (PLAIN, LOGIN, CRAM-MD5; never replaced, control bytes masked).
 */
#include <stdio.h>
#include <string.h>

#include "clientfacts.h"
#include "esmtp.h"
#include "replies.h"
#include "smtp.h"
#include "tap.h"

/* The parameters of a MAIL ("FROM:...") or RCPT ("TO:...") argument against o. */
static const char *
check(const struct esmtp_offered *o, uint64_t max, const char *arg, char *reply, size_t len)
{
	struct smtp_path path;
	bool is_mail = strncmp(arg, "FROM:", 5) == 0;

	if (smtp_parse_path(arg, strlen(arg), is_mail ? "FROM:" : "TO:", &path) != 0)
		return "(syntax)";
	return esmtp_check_params(o, max, &path, is_mail, reply, len);
}

static const char *
fixed(enum reply_id id)
{
	return reply_line(id, NULL, NULL, 0);
}

int
main(void)
{
	char list[] = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-DSN\r\n"
	    "250 AUTH PLAIN LOGIN\r\n";
	struct esmtp_offered none = { 0 }, ehlo = { .reply = list, .backend_auth = "AUTH PLAIN" };
	struct client_facts client = { 0 };
	char reply[256];

	ehlo.caps.size = true;
	ehlo.caps.size_limit = 1000;

	/* what was offered */
	ok(!esmtp_offered(&none, "PIPELINING"), "nothing is offered before an EHLO's 250");
	ok(esmtp_offered(&ehlo, "PIPELINING"), "a keyword on a 250- line is offered");
	ok(esmtp_offered(&ehlo, "SIZE"), "a keyword with a value is offered");
	ok(esmtp_offered(&ehlo, "AUTH"), "the keyword on the last line is offered");
	ok(!esmtp_offered(&ehlo, "PIPE"), "a prefix of a keyword is not");
	ok(!esmtp_offered(&ehlo, "CHUNKING"), "a keyword not in the list is not");
	ok(!esmtp_offered(&ehlo, "mx.example"), "the domain line is not a keyword");

	/* the size limit */
	is_int(esmtp_size_limit(&ehlo, 0), 1000, "no limit of ours: the offered SIZE");
	is_int(esmtp_size_limit(&ehlo, 500), 500, "ours when lower");
	is_int(esmtp_size_limit(&ehlo, 5000), 1000, "the offered SIZE when lower");
	is_int(esmtp_size_limit(&none, 700), 700, "no SIZE offered: ours");

	/* parameters */
	is_str(check(&ehlo, 0, "FROM:<a@example.org> SIZE=999", reply, sizeof(reply)), NULL,
	    "MAIL SIZE under the limit");
	is_str(check(&ehlo, 0, "FROM:<a@example.org> SIZE=1001", reply, sizeof(reply)),
	    fixed(REPLY_MESSAGE_TOO_BIG), "MAIL SIZE over the offered limit: 552");
	is_str(check(&ehlo, 0, "FROM:<a@example.org> SIZE=x", reply, sizeof(reply)),
	    fixed(REPLY_BAD_SIZE), "MAIL SIZE not a number: 501");
	is_str(check(&ehlo, 0, "FROM:<a@example.org> RET=HDRS", reply, sizeof(reply)), NULL,
	    "RET with DSN offered");
	is_str(check(&ehlo, 0, "TO:<b@example.org> NOTIFY=NEVER", reply, sizeof(reply)), NULL,
	    "NOTIFY with DSN offered");
	is_str(check(&ehlo, 0, "FROM:<a@example.org> SMTPUTF8", reply, sizeof(reply)),
	    "555 5.5.4 Error: unsupported parameter SMTPUTF8", "SMTPUTF8 not offered: 555, named");
	is_str(check(&ehlo, 0, "TO:<b@example.org> RET=HDRS", reply, sizeof(reply)), NULL,
	    "a MAIL parameter on RCPT is not ours to refuse (the backend answers it)");
	is_str(check(&ehlo, 0, "FROM:<a@example.org> BODY=7BIT", reply, sizeof(reply)), NULL,
	    "BODY=7BIT after EHLO");
	ok(check(&ehlo, 0, "FROM:<a@example.org> BODY=8BITMIME", reply, sizeof(reply)) != NULL,
	    "BODY=8BITMIME without 8BITMIME offered is refused");
	ok(check(&none, 0, "FROM:<a@example.org> BODY=7BIT", reply, sizeof(reply)) != NULL,
	    "BODY=7BIT without EHLO is refused");
	is_str(check(&none, 0, "FROM:<a@example.org>", reply, sizeof(reply)), NULL,
	    "no parameters: nothing to check");

	/* AUTH offered */
	ok(esmtp_auth_allowed(&ehlo, &client, false, false), "AUTH: the backend has it");
	ok(!esmtp_auth_allowed(&ehlo, &client, false, true), "not without TLS when TLS is required");
	ok(esmtp_auth_allowed(&ehlo, &client, true, true), "over TLS when TLS is required");
	ok(!esmtp_auth_allowed(&none, &client, true, false), "not when the backend does not offer it");
	client.auth_done = true;
	ok(!esmtp_auth_allowed(&ehlo, &client, true, false), "not once the client authenticated");

	/* the identity in a SASL response */
	memset(&client, 0, sizeof(client));
	snprintf(client.auth_mech, sizeof(client.auth_mech), "PLAIN");
	esmtp_auth_identity(&client, "AGFsaWNlAHNlY3JldA==", 20);
	is_str(client.auth_user, "alice", "PLAIN: the authentication identity, not the secret");
	esmtp_auth_identity(&client, "YXV0aHoAYm9iAHB3", 16);
	is_str(client.auth_user, "alice", "a second response does not replace it");
	memset(&client, 0, sizeof(client));
	snprintf(client.auth_mech, sizeof(client.auth_mech), "PLAIN");
	esmtp_auth_identity(&client, "YXV0aHoAYm9iAHB3", 16);
	is_str(client.auth_user, "bob", "PLAIN with an authorization identity: the authcid");
	memset(&client, 0, sizeof(client));
	snprintf(client.auth_mech, sizeof(client.auth_mech), "LOGIN");
	esmtp_auth_identity(&client, "*", 1);
	is_str(client.auth_user, "", "a cancelled exchange (*) gives none");
	esmtp_auth_identity(&client, "Y2Fyb2w=", 8);
	is_str(client.auth_user, "carol", "LOGIN: the user name");
	memset(client.auth_user, 0, sizeof(client.auth_user));
	esmtp_auth_identity(&client, "ZXYBbA==", 8);
	is_str(client.auth_user, "ev?l", "a control byte is masked");
	memset(&client, 0, sizeof(client));
	snprintf(client.auth_mech, sizeof(client.auth_mech), "CRAM-MD5");
	esmtp_auth_identity(&client, "ZGF2ZSAwMTIzNDU2Nzg5YWJjZGVm", 28);
	is_str(client.auth_user, "dave", "CRAM-MD5: the user name before the digest");

	return done_testing();
}
