/* filters/milter/milter.c: being written */
