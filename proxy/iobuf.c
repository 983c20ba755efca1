/* iobuf.c: not written yet */
