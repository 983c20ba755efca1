/* backend.c: not written yet */
