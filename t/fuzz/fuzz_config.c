/*
 * fuzz_config.c - libFuzzer harness for the config parser (cfgparse.c).
 *
 * Feeds arbitrary bytes to cfg_parse_buf(), walks the tree it returns (so
 * every node is read) and frees it.  Sanitizers catch reads past the buffer,
 * leaks and undefined behaviour; the parser must return a tree or an error
 * line of the "NAME:LINE: message" form, never crash or recurse unbounded.
 *
 *	clang -g -fsanitize=fuzzer,address,undefined -Iproxy \
 *	    t/fuzz/fuzz_config.c proxy/cfgparse.c proxy/log.c -o fuzz_config
 *	./fuzz_config t/fuzz/seed/fuzz_config
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfgparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch every node under n; returns a count so nothing is optimized away. */
static size_t
fuzz_walk(const struct cfg_node *n, int depth)
{
	size_t count = 0;

	if (depth > 64)
		abort();	/* the parser promised at most 32 levels */
	for (; n != NULL; n = n->next) {
		count++;
		if (n->line < 1)
			abort();
		if (n->key != NULL)
			count += strlen(n->key);
		switch (n->type) {
		case CFG_STRING:
			if (n->str == NULL)
				abort();
			count += strlen(n->str);
			break;
		case CFG_OBJECT:
		case CFG_ARRAY:
			count += fuzz_walk(n->child, depth + 1);
			if (n->type == CFG_OBJECT && n->child != NULL &&
			    cfg_get(n, n->child->key) != n->child)
				abort();
			break;
		case CFG_INT:
		case CFG_BOOL:
			break;
		}
		count += strlen(cfg_type_name(n->type));
	}
	return count;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_node *root;
	char err[256];

	err[0] = '\0';
	root = cfg_parse_buf((const char *)data, size, "fuzz", err, sizeof(err));
	if (root == NULL) {
		/* An error must say where: "fuzz:LINE: ...". */
		if (strncmp(err, "fuzz:", 5) != 0 || strchr(err, '\n') != NULL)
			abort();
		return 0;
	}
	if (root->type != CFG_OBJECT || root->key != NULL)
		abort();
	(void)fuzz_walk(root->child, 1);
	cfg_free(root);
	return 0;
}
