/*
 * shmutex.c - robust process-shared mutexes (see shmutex.h).
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "shmutex.h"

int
shmutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t attr;
	int rc;

	pthread_mutexattr_init(&attr);
	if ((rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) == 0 &&
	    (rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) == 0)
		rc = pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	return rc;
}

void
shmutex_lock(pthread_mutex_t *m, const char *what, void (*repair)(void))
{
	int rc = pthread_mutex_lock(m);

	if (rc == EOWNERDEAD) {
		log_warn("%s: a process died holding its lock; %s", what,
		    repair ? "repairing what it guards" : "taking it over");
		if (repair)
			repair();
		pthread_mutex_consistent(m);
	} else if (rc != 0) {
		log_panic("%s: pthread_mutex_lock: %s", what, strerror(rc));
	}
}

void
shmutex_unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}
