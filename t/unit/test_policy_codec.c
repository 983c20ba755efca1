/*
 * test_policy_codec.c - unit tests for filters/policy/codec.c: requests as
 * Postfix writes them, answers read in pieces, size limits, and every
 * access(5) action with the reply Postfix makes of it.
 */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "../../filters/policy/codec.h"

/* Feed a whole string; the outcome. */
static enum pc_read
feed(struct pc_reader *r, const char *s, const char **err)
{
	return pc_reader_feed(r, s, strlen(s), err);
}

/* The reply for an action at RCPT, as "CODE DSN TEXT". */
static const char *
reply_of(const char *action)
{
	static char out[1200];
	char dsn[16], text[1024];
	struct pc_action a;
	int code;

	pc_action_parse(action, &a);
	pc_reply(&a, "rcpt@example.org", "Recipient address", &code, dsn, text, sizeof(text));
	snprintf(out, sizeof(out), "%d %s %s", code, dsn, text);
	return out;
}

static void
test_request(void)
{
	struct pc_buf b = { 0 };

	pc_put(&b, "request", "smtpd_access_policy");
	pc_put(&b, "sender", NULL);
	pc_put(&b, "helo_name", "evil\r\nrecipient=x");
	pc_put_int(&b, "size", 12345);
	pc_end(&b);
	is_mem(b.p, b.len, "request=smtpd_access_policy\nsender=\nhelo_name=evil??recipient=x\n"
	    "size=12345\n\n", strlen("request=smtpd_access_policy\nsender=\n"
	    "helo_name=evil??recipient=x\nsize=12345\n\n"), "request lines, CR/LF in a value made '?'");
	pc_buf_reset(&b);
	pc_end(&b);
	is_int(b.len, 1, "reset");
	pc_buf_free(&b);
}

static void
test_answers(void)
{
	static struct pc_reader r;
	const char *err = NULL, *a;
	char big[PC_MAX_ANSWER + 10];

	pc_reader_init(&r);
	is_int(feed(&r, "action=DU", &err), PC_NEED_MORE, "half an answer");
	is_int(feed(&r, "NNO\n", &err), PC_NEED_MORE, "one line, no empty line yet");
	is_int(feed(&r, "\n", &err), PC_DONE, "the empty line ends it");
	is_str(pc_answer(&r, &err), "DUNNO", "its action");

	pc_reader_init(&r);
	is_int(feed(&r, "action=OK\n\naction=DUNNO\n\n", &err), PC_ERROR, "two answers at once");
	is_str(err, "more octets after the end of the answer", "why");

	pc_reader_init(&r);
	is_int(feed(&r, "action=OK\n\n", &err), PC_DONE, "done");
	is_int(feed(&r, "x", &err), PC_ERROR, "more after a complete answer");

	pc_reader_init(&r);
	is_int(feed(&r, "\n", &err), PC_DONE, "an empty answer is complete");
	ok(pc_answer(&r, &err) == NULL, "but has no action");
	is_str(err, "no action attribute", "why");

	pc_reader_init(&r);
	feed(&r, "action=OK\nfoo=bar\n\n", &err);
	ok(pc_answer(&r, &err) == NULL, "another attribute: refused, as attr_scan_plain");
	is_str(err, "an attribute other than \"action\"", "why");

	pc_reader_init(&r);
	feed(&r, "garbage\n\n", &err);
	ok(pc_answer(&r, &err) == NULL, "a line without '='");

	pc_reader_init(&r);
	feed(&r, "action=DUNNO\r\n\n", &err);
	a = pc_answer(&r, &err);
	is_str(a, "DUNNO\r", "a CR stays in the value (LF ends lines, as in Postfix)");

	memset(big, 'x', sizeof(big));
	memcpy(big, "action=", 7);
	pc_reader_init(&r);
	is_int(pc_reader_feed(&r, big, PC_MAX_ANSWER - 1, &err), PC_NEED_MORE, "just under the limit");
	is_int(pc_reader_feed(&r, big, 2, &err), PC_ERROR, "over the limit");
	is_str(err, "answer over 4096 octets", "why");
}

static void
test_actions(void)
{
	struct pc_action a;

	is_int(pc_action_parse("DUNNO", &a), PCA_DUNNO, "DUNNO");
	is_int(pc_action_parse("dunno some text", &a), PCA_DUNNO, "dunno, any case, text ignored");
	is_int(pc_action_parse("OK", &a), PCA_OK, "OK");
	is_int(pc_action_parse("permit", &a), PCA_OK, "permit");
	is_int(pc_action_parse("12345", &a), PCA_OK, "all digits: OK, as Postfix");
	is_int(pc_action_parse("REJECT", &a), PCA_REJECT, "REJECT");
	is_str(reply_of("REJECT"), "554 5.7.1 <rcpt@example.org>: Recipient address rejected: "
	    "Access denied", "REJECT's reply as Postfix");
	is_str(reply_of("REJECT 5.7.23 SPF fail"), "554 5.7.23 <rcpt@example.org>: Recipient "
	    "address rejected: SPF fail", "REJECT with an enhanced code");
	is_str(reply_of("DEFER"), "450 4.7.1 <rcpt@example.org>: Recipient address rejected: "
	    "Access denied", "DEFER");
	is_str(reply_of("DEFER_IF_PERMIT Greylisted, see http://x/"), "450 4.7.1 "
	    "<rcpt@example.org>: Recipient address rejected: Greylisted, see http://x/",
	    "DEFER_IF_PERMIT (postgrey's answer)");
	is_str(reply_of("DEFER_IF_PERMIT"), "450 4.7.1 <rcpt@example.org>: Recipient address "
	    "rejected: Service unavailable", "DEFER_IF_PERMIT without text");
	is_str(reply_of("550 5.7.1 Please see http://www.openspf.net/Why?s=mfrom"),
	    "550 5.7.1 <rcpt@example.org>: Recipient address rejected: Please see "
	    "http://www.openspf.net/Why?s=mfrom", "550 text (policyd-spf's fail)");
	is_str(reply_of("421 go away"), "421 4.7.1 <rcpt@example.org>: Recipient address "
	    "rejected: go away", "4NN without an enhanced code");
	is_str(reply_of("451 5.3.5 mismatch"), "451 4.3.5 <rcpt@example.org>: Recipient address "
	    "rejected: mismatch", "the enhanced code's class follows the code's");
	is_int(pc_action_parse("550", &a), PCA_OK, "a bare code is all digits: OK, as Postfix");
	is_int(pc_action_parse("250 fine", &a), PCA_UNKNOWN, "2NN text: not an action");
	is_int(pc_action_parse("DEFER_IF_REJECT x", &a), PCA_DEFER_IF_REJECT, "DEFER_IF_REJECT");
	is_int(pc_action_parse("PREPEND X-Greylist: delayed 5 seconds", &a), PCA_PREPEND, "PREPEND");
	is_str(a.text, "X-Greylist: delayed 5 seconds", "its header");
	is_int(pc_action_parse("PREPEND no header here", &a), PCA_DUNNO, "PREPEND without a header");
	ok(a.bad != NULL, "says why");
	is_int(pc_action_parse("PREPEND", &a), PCA_DUNNO, "PREPEND with nothing");
	is_int(pc_action_parse("HOLD", &a), PCA_HOLD, "HOLD");
	is_int(pc_action_parse("DISCARD spam", &a), PCA_DISCARD, "DISCARD");
	is_str(a.text, "spam", "its text");
	is_int(pc_action_parse("REDIRECT abuse@example.org", &a), PCA_REDIRECT, "REDIRECT");
	is_int(pc_action_parse("REDIRECT abuse", &a), PCA_DUNNO, "REDIRECT without '@'");
	is_int(pc_action_parse("BCC copy@example.org", &a), PCA_BCC, "BCC");
	is_int(pc_action_parse("FILTER smtp:[127.0.0.1]:10025", &a), PCA_FILTER, "FILTER");
	is_int(pc_action_parse("FILTER nothing", &a), PCA_DUNNO, "FILTER without ':'");
	is_int(pc_action_parse("WARN look at this", &a), PCA_WARN, "WARN");
	is_int(pc_action_parse("INFO", &a), PCA_INFO, "INFO");
	is_int(pc_action_parse("reject_unknown_client_hostname", &a), PCA_UNKNOWN,
	    "a restriction name: unknown here");
	is_int(pc_action_parse("", &a), PCA_UNKNOWN, "empty");
	is_int(pc_action_parse("HANGUP", &a), PCA_UNKNOWN, "Postfix's test-only HANGUP");
	is_str(pc_kind_name(PCA_DEFER_IF_PERMIT), "DEFER_IF_PERMIT", "kind names");
}

int
main(void)
{
	test_request();
	test_answers();
	test_actions();
	return done_testing();
}
