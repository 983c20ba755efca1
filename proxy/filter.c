/* proxy/filter.c: being written */
