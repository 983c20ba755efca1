/* filters/headers/headers.c: being written */
