/*
 * channel.h - a filter module's connection to its server (a milter, a
 * policy server): connect, read, write, one timer, a peek at an idle
 * socket, TCP_QUICKACK, a pool of idle connections.  Shared by the milter
 * and policy modules; each embeds a struct channel in its own connection
 * object and speaks its protocol over it (see channel.c).
 */
#ifndef SMTPCHAIN_FILTERS_CHANNEL_H
#define SMTPCHAIN_FILTERS_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

/* Where the server listens. */
struct channel_addr {
	enum { CHANNEL_INET, CHANNEL_UNIX } kind;
	struct sockaddr_storage addr;	/* CHANNEL_INET */
	const char	*path;		/* CHANNEL_UNIX */
};

struct channel;
struct channel_pool;

typedef void	channel_status_cb(struct channel *ch, int status);
typedef void	channel_read_cb(struct channel *ch, ssize_t nread, const uv_buf_t *buf);
typedef void	channel_timer_cb(struct channel *ch);

/*
 * A connection: its libuv handles, freed when both are closed (then
 * on_free frees the object that embeds it), so it can outlive the
 * session it served.
 */
struct channel {
	union {
		uv_handle_t	h;
		uv_stream_t	s;
		uv_tcp_t	tcp;
		uv_pipe_t	pipe;
	} io;
	uv_timer_t		 timer;
	uv_connect_t		 creq;
	int			 open_handles;
	const struct channel_addr *addr;
	void			*data;		/* the module's connection object */
	void			(*on_free)(struct channel *ch);
	channel_status_cb	*on_connect;
	channel_read_cb		*on_read;
	channel_timer_cb	*on_timer;
	bool			 connected;
	/* In a pool of idle connections. */
	struct channel_pool	*pool;
	bool			 idle;
	struct channel		*next_idle;
};

/* Idle connections, newest first (a filter {} block's, in one worker). */
struct channel_pool {
	struct channel	*idle;
	unsigned	 n, max;
};

/* A port number 1..65535, or -1. */
int	channel_parse_port(const char *s);

/* Make the handles; on failure the channel frees itself (on_free) and rc < 0. */
int	channel_init(struct channel *ch, uv_loop_t *loop, const struct channel_addr *a,
	    void *data, void (*on_free)(struct channel *ch));
/* Connect (TCP_NODELAY on TCP); cb gets the result unless this returns < 0. */
int	channel_connect(struct channel *ch, channel_status_cb *cb);
int	channel_read_start(struct channel *ch, channel_read_cb *cb);
/* Write a copy of p; cb gets the result unless this returns < 0 (UV_ENOMEM...). */
int	channel_write(struct channel *ch, const void *p, size_t n, channel_status_cb *cb);
/* Write p only if the socket takes all of it at once. */
bool	channel_try_write(struct channel *ch, const void *p, size_t n);
size_t	channel_queued(const struct channel *ch);
void	channel_timer_start(struct channel *ch, channel_timer_cb *cb, uint64_t ms);
void	channel_timer_stop(struct channel *ch);
void	channel_quickack(struct channel *ch);
/* Whether the handles keep the loop alive. */
void	channel_keep_loop(struct channel *ch, bool keep);
/* Close both handles (once); on_free follows. */
void	channel_close(struct channel *ch);

/* Into the pool (not keeping the loop alive); false when the pool is full. */
bool	channel_pool_put(struct channel_pool *p, struct channel *ch);
bool	channel_pool_full(const struct channel_pool *p);
/* An idle connection that is still quiet (the others are closed, *dropped counts them). */
struct channel *channel_pool_take(struct channel_pool *p, unsigned *dropped);
void	channel_pool_unlink(struct channel *ch);
/* Out of the pool and closed (the server closed it, or wrote while idle). */
void	channel_pool_drop(struct channel *ch);
/* At unload: closes what a loop still runs, frees the rest. */
void	channel_pool_free(struct channel_pool *p);

#endif
