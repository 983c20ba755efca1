/* proxy/module.c: being written */
