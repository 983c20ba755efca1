/* filters/milter/codec.c: being written */
