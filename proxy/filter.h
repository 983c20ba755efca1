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

struct client_facts;
struct conn;
struct filter_chain;
struct txn;

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
	char		*reply;		/* a module's set_reply() or the refusal's reply,
					   "" or NULL if none: FILTER_REPLY_MAX bytes
					   allocated at the first, kept for the session
					   (an idle session carries no 2 KiB for it) */
};

#define FILTER_REPLY_MAX	2048

/* Per session and module: what host->state() and friends work on. */
struct sc_ctx {
	struct filter_session *fs;
	size_t		 idx;
	void		*state;		/* the module's per-session state */
	bool		 in_message;	/* saw a hook of the current message */
	bool		 got_eom;
	bool		 replacing_body;/* replace_body() began in this eom */
	char		 scratch[64];	/* for host->get() numbers and addresses */
	char		 value[520];	/* for host->get() {auth_author} */
};

/*
 * What a session gives its filter run, once, at filter_session_open(): the
 * facts the host table reads (host->get()) and the transaction the modules
 * change.  The pointers are the session's and outlive the run; the values
 * behind them are read when a module asks, so they are always current.
 */
struct filter_env {
	const char	*id;		/* the session id: log lines, host->get("session_id") */
	const struct filter_chain *chain;
	void		*loop;		/* the worker's uv_loop_t, for host->loop() */
	const char	*hostname;	/* our name ({j}) */
	struct client_facts *client;	/* address, greeting, authentication; the
					   host table fills in client->local when asked */
	struct conn	*conn;		/* the client's connection: TLS facts, our address */
	const char	*client_name;	/* the client's verified name ("" if none) */
	struct txn	*tx;		/* the envelope and the held message */
	void		*owner;		/* handed to resumed() */
	void		(*resumed)(void *owner);	/* a pending module has answered:
						   ask filter_phase() again */
};

/* One session's run of the chain: owned by filter.c, embedded in the session. */
struct filter_session {
	struct filter_env env;
	struct sc_ctx	*ctx;		/* one per module, NULL without modules */
	struct filter_run run;
	bool		 skip_session;	/* a module accepted the session */
	bool		 skip_message;	/* a module accepted the message */
	enum sc_verdict	 session_outcome;	/* discard/quarantine from connect/helo */
	enum sc_verdict	 msg_outcome;	/* discard/quarantine for this message */
	size_t		 msg_outcome_by;	/* the module that decided it */
};

/* The table every module's init() receives. */
const struct sc_host *filter_host(void);
void	filter_set_loop(void *loop);

/* Session lifetime: per-module contexts; abort/close hooks at the end.
 * env->resumed: called when a pending module has answered and the run goes on. */
void	filter_session_open(struct filter_session *fs, const struct filter_env *env);
void	filter_session_close(struct filter_session *fs);
/* The message is over (outcome, RSET, new EHLO): abort() for modules that did not see its end. */
void	filter_message_end(struct filter_session *fs);

/*
 * Run (or look up the finished run of) one step.  a1/a2: the helo name,
 * the address and the parameter string, or the unknown command's line;
 * NULL otherwise.  On FILTER_REFUSE,
 * *reply is the full reply text (lines joined by CRLF, no final CRLF).
 */
enum filter_answer filter_phase(struct filter_session *fs, enum filter_step step,
	    const char *a1, const char *a2, const char **reply);

/* Whether the coming message is held for the chain (its hooks see it
 * whole) rather than streamed to the backend. */
bool	filter_holds_message(const struct filter_session *fs);

/* The module that decided the last step ("" if none), for logs. */
const char *filter_decider(const struct filter_session *fs);

#endif
