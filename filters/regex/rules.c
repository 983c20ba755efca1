/* filters/regex/rules.c: being written */
