/* smtp.c: not written yet */
