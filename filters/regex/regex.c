/* filters/regex/regex.c: being written */
