/*
 * filter.h - the filter chain as a session drives it.
 *
 * The session asks filter_phase() at each protocol step (connect, helo,
 * mail, rcpt, data, the held message, and any command it does not know); the chain calls each module's
 * hook in order and comes back with one verdict.  A hook that answers
 * SC_PENDING suspends the run: filter_phase() returns FILTER_WAIT, the
 * session stops where it is, and when the module calls host->resume() the
 * run goes on and the session is woken up (the callback it gave
 * filter_session_open()), which
 * asks filter_phase() again for the same step and gets the result.
 *
 * Verdicts, once per step:
 *   SC_CONTINUE / SC_ACCEPT  go on (ACCEPT also skips the chain for the rest
 *                            of the message, or of the session at connect/helo)
 *   SC_REJECT / SC_TEMPFAIL  refuse this step with the module's reply or a default
 *   SC_DISCARD / SC_QUARANTINE  remembered: the message gets that outcome at its end
 */
#ifndef SMTPCHAIN_PROXY_FILTER_H
#define SMTPCHAIN_PROXY_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "smtpchain/filter.h"

struct session;

enum filter_step {
	FILTER_CONNECT = 0,
	FILTER_HELO,
	FILTER_MAIL,
	FILTER_RCPT,
	FILTER_DATA,
	FILTER_MESSAGE,		/* header..eom over the held message */
	FILTER_UNKNOWN,		/* a command the proxy does not know (any time) */
	FILTER_STEP_MAX
};

enum filter_answer {
	FILTER_GO = 0,		/* go on with the step */
	FILTER_WAIT,		/* a module is pending: stop, you will be woken up */
	FILTER_REFUSE,		/* refuse the step: reply is set */
};

/* Whether a step belongs to a message (MAIL up to its end). */
#define FILTER_STEP_IN_MESSAGE(step)	((step) >= FILTER_MAIL && (step) <= FILTER_MESSAGE)

/* Where a run stands inside FILTER_MESSAGE for one module. */
enum filter_stage { STAGE_HEADERS = 0, STAGE_EOH, STAGE_BODY, STAGE_EOM, STAGE_DONE };

/* The chain's run for one session (one step at a time). */
struct filter_run {
	bool		 active;	/* a step is being run */
	bool		 waiting;	/* a module returned SC_PENDING */
	bool		 finished;	/* the step has its verdict (refuse or go) */
	bool		 in_hook;	/* inside a hook call (resume() from inside it) */
	bool		 resumed_early;	/* resume() came before the hook returned */
	enum sc_verdict	 early_verdict;
	enum filter_step step;
	size_t		 idx;		/* module being called */
	enum filter_stage stage;
	size_t		 header;	/* STAGE_HEADERS: next header index */
	enum filter_answer answer;
	enum sc_verdict	 verdict;	/* the deciding verdict */
	size_t		 verdict_idx;	/* which module decided */
	char		*arg1, *arg2;	/* helo name / address, params */
	char		 reply[2048];	/* a module's set_reply(), "" if none */
};

/* Per session and module: what host->state() and friends work on. */
struct sc_ctx {
	struct session	*s;
	size_t		 idx;
	void		*state;		/* the module's per-session state */
	bool		 in_message;	/* saw a hook of the current message */
	bool		 got_eom;
	bool		 replacing_body;/* replace_body() began in this eom */
	char		 scratch[64];	/* for host->get() numbers and addresses */
	char		 value[520];	/* for host->get() {auth_author} */
};

/* The table every module's init() receives. */
const struct sc_host *filter_host(void);
void	filter_set_loop(void *loop);

/* Session lifetime: per-module contexts; abort/close hooks at the end.
 * resumed: called when a pending module has answered and the run goes on. */
void	filter_session_open(struct session *s, void (*resumed)(struct session *s));
void	filter_session_close(struct session *s);
/* The message is over (outcome, RSET, new EHLO): abort() for modules that did not see its end. */
void	filter_message_end(struct session *s);

/*
 * Run (or look up the finished run of) one step.  a1/a2: the helo name,
 * the address and the parameter string, or the unknown command's line;
 * NULL otherwise.  On FILTER_REFUSE,
 * *reply is the full reply text (lines joined by CRLF, no final CRLF).
 */
enum filter_answer filter_phase(struct session *s, enum filter_step step,
	    const char *a1, const char *a2, const char **reply);

/* The module that decided the last step ("" if none), for logs. */
const char *filter_decider(const struct session *s);

#endif
