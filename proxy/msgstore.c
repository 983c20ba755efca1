/* proxy/msgstore.c: being written */
