/* dotstream.c: not written yet */
