/* t/modules/testfilter.c: being written */
