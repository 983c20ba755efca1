/*
 * cfgparse.h - a parser for the subset of UCL (the nginx-like syntax of
 * libucl) that smtpchain.conf uses.
 *
 * libucl itself is not packaged for Debian 12 (its "libucl-dev" is an
 * unrelated compression library), so this small reader stands in for it.
 * It only builds a tree with line numbers; what the keys mean is config.c's
 * business.
 *
 * Syntax accepted:
 *   - the file is an object without braces;
 *   - pairs:  key = value;   key : value;   key value;   key { ... }   key = { ... }
 *     the terminator ; or , is optional before a newline or a closing brace;
 *   - values: "double quoted" (escapes \" \\ \n \t \r \/ \uXXXX), 'single quoted'
 *     (no escapes but \' and \\), bare words (letters, digits, _ - . / : @ + * [ ]),
 *     numbers with an optional multiplier suffix (k m g = 1000^n, kb mb gb =
 *     1024^n; s min h d are seconds for durations), booleans
 *     true/false/yes/no/on/off, objects { ... }, arrays [ a, b, c ];
 *   - comments: # to end of line, and C-style comment blocks;
 *   - a key repeated in one object is kept, in file order (e.g. several
 *     filter {} blocks); config.c decides where that is an error.
 */
#ifndef SMTPCHAIN_CFGPARSE_H
#define SMTPCHAIN_CFGPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cfg_type {
	CFG_OBJECT,
	CFG_ARRAY,
	CFG_STRING,	/* quoted string or bare word */
	CFG_INT,	/* number, suffix applied */
	CFG_BOOL,
};

struct cfg_node {
	enum cfg_type	 type;
	char		*key;		/* NULL for array elements and the root */
	int		 line;		/* line where the value starts */
	char		*str;		/* CFG_STRING: NUL-terminated (no NUL inside) */
	int64_t		 num;		/* CFG_INT */
	bool		 boolean;	/* CFG_BOOL */
	struct cfg_node	*child;		/* CFG_OBJECT/CFG_ARRAY: first member */
	struct cfg_node	*next;		/* next member of the parent */
};

/* Parse a file or a buffer; NULL on error with "NAME:LINE: message" in err. */
struct cfg_node *cfg_parse_file(const char *path, char *err, size_t errlen);
struct cfg_node *cfg_parse_buf(const char *buf, size_t len, const char *name,
    char *err, size_t errlen);
void cfg_free(struct cfg_node *node);	/* node and all below it, not its siblings */

/* First member of an object with this key (case-sensitive), or NULL. */
struct cfg_node *cfg_get(const struct cfg_node *obj, const char *key);

/* "object", "array", "string", "number", "boolean": for error messages. */
const char *cfg_type_name(enum cfg_type type);

#endif
