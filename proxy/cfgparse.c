/*
 * cfgparse.c - a reader for the UCL subset described in cfgparse.h.
 *
 * SYNOPSIS
 *	root = cfg_parse_file(path, err, sizeof(err));
 *	root = cfg_parse_buf(buf, len, name, err, sizeof(err));
 *	cfg_free(root);
 *
 * DESCRIPTION
 *	A hand-written recursive-descent parser that turns a config text into
 *	a tree of struct cfg_node, each node carrying the line its value
 *	starts on.  It gives no meaning to keys (config.c does that).
 *
 *	The input is not trusted (the parser is fuzzed): every read is bounded
 *	by the end of the buffer, nesting is limited to CFG_MAX_DEPTH levels of
 *	objects and arrays, NUL bytes are refused, numbers that do not fit in
 *	an int64_t are refused, and inputs are limited to CFG_MAX_INPUT bytes.
 *
 *	Lexical details the header leaves open:
 *	  - keys are quoted strings or bare words made of letters, digits and
 *	    _ - . / @ + * (no ':' so that "key: value" works);
 *	  - a bare value word may also contain ':' and '[' and, closing an
 *	    earlier '[' of the same word, ']' (so "[ a, b]" still ends at ']');
 *	    it cannot start with '[' (that opens an array);
 *	  - a bare word is a number when it is an optional sign, decimal digits
 *	    and an optional suffix (case-insensitive); a boolean when it is one
 *	    of true/false/yes/no/on/off (case-insensitive); a string otherwise;
 *	  - quoted strings may not span lines; C-style comments do not nest;
 *	  - array elements are separated by ',' (optional before a newline or
 *	    the closing ']'); after a '}' or ']' value the ';' is optional;
 *	  - a UTF-8 byte order mark at the start is skipped.
 *
 * DIAGNOSTICS
 *	One line "NAME:LINE: message" in the caller's buffer; for a file that
 *	cannot be read, "NAME: message".
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cfgparse.h"
#include "log.h"

#define CFG_MAX_DEPTH	32			/* nested objects and arrays */
#define CFG_MAX_INPUT	(16 * 1024 * 1024)	/* bytes in one config */

/* Where the parser is in the text, and where errors go. */
struct cfg_parser {
	const char	*p;		/* next unread byte */
	const char	*end;		/* one past the last byte */
	int		 line;		/* line of *p */
	int		 depth;		/* objects/arrays open around p */
	const char	*name;		/* for messages */
	char		*err;
	size_t		 errlen;
	bool		 failed;	/* err holds the first error */
};

static struct cfg_node *cfg_parse_value(struct cfg_parser *, char *);

/* Record the first error as "NAME:LINE: message"; later ones are dropped. */
static void __attribute__((format(printf, 3, 4)))
cfg_error(struct cfg_parser *ps, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (ps->failed)
		return;
	ps->failed = true;
	if (ps->err == NULL || ps->errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Keep it one printable line, whatever a quoted key contained. */
	for (char *q = msg; *q != '\0'; q++)
		if (iscntrl((unsigned char)*q))
			*q = '?';
	snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->name, line, msg);
}

/* Record an error that has no line: "NAME: message". */
static void __attribute__((format(printf, 3, 4)))
cfg_error_noline(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Describe the byte at p (or the end of input) for an error message. */
static const char *
cfg_describe(const struct cfg_parser *ps, char *buf, size_t len)
{
	unsigned char c;

	if (ps->p >= ps->end)
		return "end of file";
	c = (unsigned char)*ps->p;
	if (c == '\n')
		snprintf(buf, len, "end of line");
	else if (c == '\'')
		snprintf(buf, len, "\"'\"");
	else if (isprint(c))
		snprintf(buf, len, "'%c'", c);
	else
		snprintf(buf, len, "byte 0x%02x", c);
	return buf;
}

/* A new node of a type, at a line, owning key (which may be NULL). */
static struct cfg_node *
cfg_node_new(enum cfg_type type, char *key, int line)
{
	struct cfg_node *n = xcalloc(1, sizeof(*n));

	n->type = type;
	n->key = key;
	n->line = line;
	return n;
}

/* Letters, digits and _ - . / @ + *: what keys and bare words are made of. */
static bool
cfg_is_keychar(unsigned char c)
{
	return isalnum(c) || strchr("_-./@+*", c) != NULL;
}

/* Whitespace that does not end a line. */
static bool
cfg_is_blank(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Skip blanks and comments, and newlines too if newlines is true.  Sets
 * *crossed when a newline was passed (inside a comment or not).  Returns -1
 * on an unterminated comment.
 */
static int
cfg_skip(struct cfg_parser *ps, bool newlines, bool *crossed)
{
	while (ps->p < ps->end) {
		unsigned char c = (unsigned char)*ps->p;

		if (cfg_is_blank(c)) {
			ps->p++;
		} else if (c == '\n') {
			if (!newlines) {
				/* The caller stops here; but report the newline. */
				if (crossed)
					*crossed = true;
				return 0;
			}
			if (crossed)
				*crossed = true;
			ps->line++;
			ps->p++;
		} else if (c == '#') {
			while (ps->p < ps->end && *ps->p != '\n')
				ps->p++;
		} else if (c == '/' && ps->end - ps->p >= 2 && ps->p[1] == '*') {
			int start = ps->line;

			ps->p += 2;
			for (;;) {
				if (ps->end - ps->p < 2) {
					ps->p = ps->end;
					cfg_error(ps, start, "unterminated comment");
					return -1;
				}
				if (ps->p[0] == '*' && ps->p[1] == '/') {
					ps->p += 2;
					break;
				}
				if (*ps->p == '\n') {
					ps->line++;
					if (crossed)
						*crossed = true;
				}
				ps->p++;
			}
		} else {
			break;
		}
	}
	return 0;
}

/* Append one byte to a growing string. */
static void
cfg_buf_add(char **buf, size_t *len, size_t *cap, char c)
{
	if (*len + 1 >= *cap) {
		*cap = *cap ? *cap * 2 : 32;
		*buf = xrealloc(*buf, *cap);
	}
	(*buf)[(*len)++] = c;
	(*buf)[*len] = '\0';
}

/* Read four hex digits of a \u escape; -1 if they are not there. */
static long
cfg_hex4(struct cfg_parser *ps)
{
	long v = 0;

	if (ps->end - ps->p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)ps->p[i];

		if (!isxdigit(c))
			return -1;
		v = v * 16 + (isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
	}
	ps->p += 4;
	return v;
}

/* Append a code point as UTF-8. */
static void
cfg_buf_utf8(char **buf, size_t *len, size_t *cap, unsigned long cp)
{
	if (cp < 0x80) {
		cfg_buf_add(buf, len, cap, (char)cp);
	} else if (cp < 0x800) {
		cfg_buf_add(buf, len, cap, (char)(0xc0 | (cp >> 6)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		cfg_buf_add(buf, len, cap, (char)(0xe0 | (cp >> 12)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | ((cp >> 6) & 0x3f)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | (cp & 0x3f)));
	} else {
		cfg_buf_add(buf, len, cap, (char)(0xf0 | (cp >> 18)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | ((cp >> 12) & 0x3f)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | ((cp >> 6) & 0x3f)));
		cfg_buf_add(buf, len, cap, (char)(0x80 | (cp & 0x3f)));
	}
}

/* Decode the rest of a \u escape (after "\u") into buf; -1 on error. */
static int
cfg_unicode_escape(struct cfg_parser *ps, int line, char **buf, size_t *len,
    size_t *cap)
{
	long hi, lo;

	if ((hi = cfg_hex4(ps)) < 0) {
		cfg_error(ps, line, "bad \\u escape in string (expected 4 hex digits)");
		return -1;
	}
	if (hi == 0) {
		cfg_error(ps, line, "\\u0000 is not allowed in a string");
		return -1;
	}
	if (hi >= 0xdc00 && hi <= 0xdfff) {
		cfg_error(ps, line, "bad \\u escape in string (lone low surrogate)");
		return -1;
	}
	if (hi >= 0xd800 && hi <= 0xdbff) {
		if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
			cfg_error(ps, line, "bad \\u escape in string (lone high surrogate)");
			return -1;
		}
		ps->p += 2;
		lo = cfg_hex4(ps);
		if (lo < 0xdc00 || lo > 0xdfff) {
			cfg_error(ps, line, "bad \\u escape in string (lone high surrogate)");
			return -1;
		}
		hi = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
	}
	cfg_buf_utf8(buf, len, cap, (unsigned long)hi);
	return 0;
}

/*
 * Read a quoted string starting at the quote under p.  Returns a new
 * NUL-terminated string, or NULL on error.
 */
static char *
cfg_read_quoted(struct cfg_parser *ps)
{
	char quote = *ps->p, *buf = NULL;
	size_t len = 0, cap = 0;
	int line = ps->line;

	ps->p++;
	cap = 32;
	buf = xmalloc(cap);
	buf[0] = '\0';
	for (;;) {
		char c;

		if (ps->p >= ps->end || *ps->p == '\n') {
			cfg_error(ps, line, "unterminated string (quoted strings end on the line they start)");
			free(buf);
			return NULL;
		}
		c = *ps->p++;
		if (c == quote)
			break;
		if (c != '\\') {
			cfg_buf_add(&buf, &len, &cap, c);
			continue;
		}
		if (ps->p >= ps->end || *ps->p == '\n') {
			cfg_error(ps, line, "unterminated string (quoted strings end on the line they start)");
			free(buf);
			return NULL;
		}
		c = *ps->p++;
		if (quote == '\'') {
			/* Single quotes: only \' and \\ are escapes. */
			if (c != '\'' && c != '\\')
				cfg_buf_add(&buf, &len, &cap, '\\');
			cfg_buf_add(&buf, &len, &cap, c);
			continue;
		}
		switch (c) {
		case '"':
		case '\\':
		case '/':
			cfg_buf_add(&buf, &len, &cap, c);
			break;
		case 'n':
			cfg_buf_add(&buf, &len, &cap, '\n');
			break;
		case 't':
			cfg_buf_add(&buf, &len, &cap, '\t');
			break;
		case 'r':
			cfg_buf_add(&buf, &len, &cap, '\r');
			break;
		case 'u':
			if (cfg_unicode_escape(ps, line, &buf, &len, &cap) == -1) {
				free(buf);
				return NULL;
			}
			break;
		default:
			if (isprint((unsigned char)c))
				cfg_error(ps, line, "unknown escape \\%c in string", c);
			else
				cfg_error(ps, line, "unknown escape \\ + byte 0x%02x in string",
				    (unsigned char)c);
			free(buf);
			return NULL;
		}
	}
	return buf;
}

/* Read a key (bare or quoted) at p; NULL with an error if there is none. */
static char *
cfg_read_key(struct cfg_parser *ps)
{
	const char *start = ps->p;
	char what[32];
	char *key;

	if (*ps->p == '"' || *ps->p == '\'') {
		int line = ps->line;

		if ((key = cfg_read_quoted(ps)) == NULL)
			return NULL;
		if (*key == '\0') {
			cfg_error(ps, line, "empty key");
			free(key);
			return NULL;
		}
		return key;
	}
	while (ps->p < ps->end && cfg_is_keychar((unsigned char)*ps->p))
		ps->p++;
	if (ps->p == start) {
		cfg_error(ps, ps->line, "expected a key, got %s",
		    cfg_describe(ps, what, sizeof(what)));
		return NULL;
	}
	return xstrndup(start, (size_t)(ps->p - start));
}

/*
 * If word[0..len) is a number with an optional suffix, store it in *out and
 * return 1; return 0 if it is not a number, -1 if it does not fit in int64.
 */
static int
cfg_word_number(const char *word, size_t len, int64_t *out)
{
	static const struct {
		const char	*suffix;
		uint64_t	 mult;
	} suffixes[] = {
		{ "k", 1000ULL }, { "m", 1000000ULL }, { "g", 1000000000ULL },
		{ "kb", 1024ULL }, { "mb", 1048576ULL }, { "gb", 1073741824ULL },
		{ "s", 1 }, { "min", 60 }, { "h", 3600 }, { "d", 86400 },
	};
	const char *p = word, *end = word + len;
	bool negative = false, overflow = false;
	uint64_t v = 0, mult = 1, limit;

	if (p < end && (*p == '-' || *p == '+'))
		negative = *p++ == '-';
	if (p == end || !isdigit((unsigned char)*p))
		return 0;
	limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; p < end && isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (limit - d) / 10)
			overflow = true;
		else
			v = v * 10 + d;
	}
	if (p < end) {
		size_t slen = (size_t)(end - p), i;

		for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
			if (strlen(suffixes[i].suffix) == slen &&
			    strncasecmp(p, suffixes[i].suffix, slen) == 0)
				break;
		if (i == sizeof(suffixes) / sizeof(suffixes[0]))
			return 0;
		mult = suffixes[i].mult;
	}
	if (overflow || v > limit / mult)
		return -1;
	v *= mult;
	if (negative)
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	else
		*out = (int64_t)v;
	return 1;
}

/* Whether word[0..len) is a boolean word; its value in *out. */
static bool
cfg_word_bool(const char *word, size_t len, bool *out)
{
	static const struct {
		const char	*word;
		bool		 value;
	} words[] = {
		{ "true", true }, { "yes", true }, { "on", true },
		{ "false", false }, { "no", false }, { "off", false },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strlen(words[i].word) == len &&
		    strncasecmp(word, words[i].word, len) == 0) {
			*out = words[i].value;
			return true;
		}
	return false;
}

/* Read a bare word value at p as a string, number or boolean node. */
static struct cfg_node *
cfg_parse_word(struct cfg_parser *ps, char *key)
{
	const char *start = ps->p;
	struct cfg_node *n;
	int open = 0, r;
	size_t len;
	int64_t num;
	bool b;

	while (ps->p < ps->end) {
		unsigned char c = (unsigned char)*ps->p;

		if (c == '/' && ps->end - ps->p >= 2 && ps->p[1] == '*')
			break;		/* a comment ends the word */
		if (cfg_is_keychar(c) || c == ':')
			;
		else if (c == '[' && ps->p > start)
			open++;
		else if (c == ']' && open > 0)
			open--;
		else
			break;
		ps->p++;
	}
	len = (size_t)(ps->p - start);
	if ((r = cfg_word_number(start, len, &num)) == -1) {
		cfg_error(ps, ps->line, "number out of range: %.*s",
		    len > 40 ? 40 : (int)len, start);
		free(key);
		return NULL;
	}
	if (r == 1) {
		n = cfg_node_new(CFG_INT, key, ps->line);
		n->num = num;
	} else if (cfg_word_bool(start, len, &b)) {
		n = cfg_node_new(CFG_BOOL, key, ps->line);
		n->boolean = b;
	} else {
		n = cfg_node_new(CFG_STRING, key, ps->line);
		n->str = xstrndup(start, len);
	}
	return n;
}

/* Whether a value can start with the byte at p. */
static bool
cfg_value_start(const struct cfg_parser *ps)
{
	unsigned char c;

	if (ps->p >= ps->end)
		return false;
	c = (unsigned char)*ps->p;
	if (c == '/' && ps->end - ps->p >= 2 && ps->p[1] == '*')
		return false;
	return c == '"' || c == '\'' || c == '{' || c == '[' ||
	    cfg_is_keychar(c) || c == ':';
}

/*
 * Read the members of an object up to its closing '}' (or the end of input
 * for the root, when braced is false) into obj.  Returns -1 on error.
 */
static int
cfg_parse_members(struct cfg_parser *ps, struct cfg_node *obj, bool braced,
    int open_line)
{
	struct cfg_node **tail = &obj->child;
	char what[32];

	for (;;) {
		struct cfg_node *value;
		bool crossed = false, closed;
		char *key;
		int key_line;

		if (cfg_skip(ps, true, NULL) == -1)
			return -1;
		if (ps->p >= ps->end) {
			if (!braced)
				return 0;
			cfg_error(ps, open_line, "'{' is never closed");
			return -1;
		}
		if (*ps->p == '}') {
			if (!braced) {
				cfg_error(ps, ps->line, "unexpected '}'");
				return -1;
			}
			ps->p++;
			return 0;
		}
		key_line = ps->line;
		if ((key = cfg_read_key(ps)) == NULL)
			return -1;

		/*
		 * key = value; key : value; key value; key { }.  The separator
		 * or a '{' may be on a later line, a bare value may not.
		 */
		if (cfg_skip(ps, false, &crossed) == -1 ||
		    (crossed && cfg_skip(ps, true, NULL) == -1)) {
			free(key);
			return -1;
		}
		if (ps->p < ps->end && (*ps->p == '=' || *ps->p == ':')) {
			ps->p++;
			if (cfg_skip(ps, true, NULL) == -1) {
				free(key);
				return -1;
			}
			if (!cfg_value_start(ps)) {
				cfg_error(ps, ps->p < ps->end ? ps->line : key_line,
				    "expected a value after key \"%s\", got %s",
				    key, cfg_describe(ps, what, sizeof(what)));
				free(key);
				return -1;
			}
		} else if (crossed ? ps->p >= ps->end || *ps->p != '{' :
		    !cfg_value_start(ps)) {
			cfg_error(ps, key_line,
			    "expected '=' or '{' after key \"%s\"", key);
			free(key);
			return -1;
		}
		closed = *ps->p == '{' || *ps->p == '[';
		if ((value = cfg_parse_value(ps, key)) == NULL)
			return -1;
		*tail = value;
		tail = &value->next;

		/* The terminator: ';' or ',', or a newline, '}' or the end. */
		crossed = false;
		if (cfg_skip(ps, false, &crossed) == -1)
			return -1;
		if (ps->p < ps->end && (*ps->p == ';' || *ps->p == ','))
			ps->p++;
		else if (!closed && !crossed && ps->p < ps->end && *ps->p != '}') {
			cfg_error(ps, ps->line,
			    "expected ';' or a new line after the value of key \"%s\", got %s",
			    value->key, cfg_describe(ps, what, sizeof(what)));
			return -1;
		}
	}
}

/* Read an array at its '[' into a new node; NULL on error. */
static struct cfg_node *
cfg_parse_array(struct cfg_parser *ps, char *key)
{
	struct cfg_node *arr = cfg_node_new(CFG_ARRAY, key, ps->line);
	struct cfg_node **tail = &arr->child;
	int open_line = ps->line;
	char what[32];

	ps->p++;
	for (;;) {
		struct cfg_node *elem;
		bool crossed = false;

		if (cfg_skip(ps, true, NULL) == -1)
			goto fail;
		if (ps->p >= ps->end) {
			cfg_error(ps, open_line, "'[' is never closed");
			goto fail;
		}
		if (*ps->p == ']') {
			ps->p++;
			return arr;
		}
		if (!cfg_value_start(ps)) {
			cfg_error(ps, ps->line, "expected a value or ']' in array, got %s",
			    cfg_describe(ps, what, sizeof(what)));
			goto fail;
		}
		if ((elem = cfg_parse_value(ps, NULL)) == NULL)
			goto fail;
		*tail = elem;
		tail = &elem->next;

		if (cfg_skip(ps, false, &crossed) == -1)
			goto fail;
		if (ps->p < ps->end && *ps->p == ',')
			ps->p++;
		else if (!crossed && ps->p < ps->end && *ps->p != ']') {
			cfg_error(ps, ps->line, "expected ',' or ']' in array, got %s",
			    cfg_describe(ps, what, sizeof(what)));
			goto fail;
		}
	}
fail:
	cfg_free(arr);
	return NULL;
}

/*
 * Read one value at p (which cfg_value_start() accepted) into a new node
 * that takes ownership of key; NULL on error (key is freed).
 */
static struct cfg_node *
cfg_parse_value(struct cfg_parser *ps, char *key)
{
	struct cfg_node *n;
	int line = ps->line;
	char *s;

	switch (*ps->p) {
	case '{':
	case '[':
		if (ps->depth >= CFG_MAX_DEPTH) {
			cfg_error(ps, line, "objects and arrays nested more than %d deep",
			    CFG_MAX_DEPTH);
			free(key);
			return NULL;
		}
		ps->depth++;
		if (*ps->p == '[') {
			n = cfg_parse_array(ps, key);
		} else {
			n = cfg_node_new(CFG_OBJECT, key, line);
			ps->p++;
			if (cfg_parse_members(ps, n, true, line) == -1) {
				cfg_free(n);
				n = NULL;
			}
		}
		ps->depth--;
		return n;
	case '"':
	case '\'':
		if ((s = cfg_read_quoted(ps)) == NULL) {
			free(key);
			return NULL;
		}
		n = cfg_node_new(CFG_STRING, key, line);
		n->str = s;
		return n;
	default:
		return cfg_parse_word(ps, key);
	}
}

/* Parse a buffer; see cfgparse.h. */
struct cfg_node *
cfg_parse_buf(const char *buf, size_t len, const char *name, char *err,
    size_t errlen)
{
	struct cfg_parser ps;
	struct cfg_node *root;
	const char *nul;

	if (buf == NULL) {
		buf = "";
		len = 0;
	}
	memset(&ps, 0, sizeof(ps));
	ps.p = buf;
	ps.end = buf + len;
	ps.line = 1;
	ps.name = name ? name : "(config)";
	ps.err = err;
	ps.errlen = errlen;
	if (err && errlen)
		err[0] = '\0';

	if (len > CFG_MAX_INPUT) {
		cfg_error_noline(err, errlen, "%s: too large (more than %d bytes)",
		    ps.name, CFG_MAX_INPUT);
		return NULL;
	}
	if (len > 0 && (nul = memchr(buf, '\0', len)) != NULL) {
		int line = 1;

		for (const char *q = buf; q < nul; q++)
			if (*q == '\n')
				line++;
		cfg_error(&ps, line, "NUL byte in the input");
		return NULL;
	}
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		ps.p += 3;

	root = cfg_node_new(CFG_OBJECT, NULL, 1);
	if (cfg_parse_members(&ps, root, false, 1) == -1) {
		cfg_free(root);
		return NULL;
	}
	return root;
}

/* Read a whole file and parse it; see cfgparse.h. */
struct cfg_node *
cfg_parse_file(const char *path, char *err, size_t errlen)
{
	struct cfg_node *root;
	size_t len = 0, cap = 8192;
	char *buf;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		cfg_error_noline(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = xmalloc(cap);
	for (;;) {
		if (len == cap) {
			if (cap > CFG_MAX_INPUT) {
				cfg_error_noline(err, errlen, "%s: too large (more than %d bytes)",
				    path, CFG_MAX_INPUT);
				goto fail;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		r = read(fd, buf + len, cap - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			cfg_error_noline(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	root = cfg_parse_buf(buf, len, path, err, errlen);
	free(buf);
	return root;
fail:
	close(fd);
	free(buf);
	return NULL;
}

/* Free a node and everything under it (not its siblings). */
void
cfg_free(struct cfg_node *node)
{
	struct cfg_node *child, *next;

	if (node == NULL)
		return;
	for (child = node->child; child != NULL; child = next) {
		next = child->next;
		cfg_free(child);
	}
	free(node->key);
	free(node->str);
	free(node);
}

/* First member of an object with this key (case-sensitive), or NULL. */
struct cfg_node *
cfg_get(const struct cfg_node *obj, const char *key)
{
	if (obj == NULL || obj->type != CFG_OBJECT)
		return NULL;
	for (struct cfg_node *n = obj->child; n != NULL; n = n->next)
		if (n->key != NULL && strcmp(n->key, key) == 0)
			return n;
	return NULL;
}

/* A type's name for error messages. */
const char *
cfg_type_name(enum cfg_type type)
{
	switch (type) {
	case CFG_OBJECT:
		return "object";
	case CFG_ARRAY:
		return "array";
	case CFG_STRING:
		return "string";
	case CFG_INT:
		return "number";
	case CFG_BOOL:
		return "boolean";
	}
	return "unknown";
}
