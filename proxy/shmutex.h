/*
 * shmutex.h - a mutex in memory the master shares with its workers
 * (MAP_SHARED): process-shared and robust, so that a worker killed while
 * holding it leaves it to the next process instead of blocking them all.
 * Used by connlimit.c (the connection table) and metrics.c (filter names).
 */
#ifndef SMTPCHAIN_SHMUTEX_H
#define SMTPCHAIN_SHMUTEX_H

#include <pthread.h>

/* Initialise m (in shared memory): 0, or an errno value. */
int	shmutex_init(pthread_mutex_t *m);
/*
 * Lock m.  When its holder died, log "WHAT: a process died holding its
 * lock", run repair (NULL: nothing to repair) on what the lock guards, and
 * make the mutex usable again.
 */
void	shmutex_lock(pthread_mutex_t *m, const char *what, void (*repair)(void));
void	shmutex_unlock(pthread_mutex_t *m);

#endif
