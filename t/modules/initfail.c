/* t/modules/initfail.c: being written */
