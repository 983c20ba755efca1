/* cfgparse.c: not written yet */
