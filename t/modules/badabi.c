/* t/modules/badabi.c: being written */
