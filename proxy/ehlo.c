/* ehlo.c: not written yet */
