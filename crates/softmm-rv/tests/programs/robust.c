/* A robust mutex whose owner thread exits while holding it: the next
 * locker gets EOWNERDEAD (the kernel's robust-list walk at thread exit),
 * makes it consistent, and the mutex works again. A waiter blocked on the
 * mutex when the owner dies is woken the same way. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t m;

/* Lock with a deadline: without the robust-list walk at thread exit the
 * lock would never come, and the run would hang instead of differing. */
static int lock_or_timeout(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 5;
    int r = pthread_mutex_timedlock(&m, &t);
    return r == ETIMEDOUT ? -1 : r;
}
static pthread_barrier_t locked;

static void *owner_dies(void *arg) {
    (void)arg;
    int r = lock_or_timeout();
    printf("owner locked: %d\n", r);
    fflush(stdout);
    pthread_barrier_wait(&locked);
    usleep(20000);
    return NULL; /* exits holding the mutex */
}

static void *waiter(void *arg) {
    (void)arg;
    int r = lock_or_timeout();
    printf("waiter: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    if (r == EOWNERDEAD)
        pthread_mutex_consistent(&m);
    pthread_mutex_unlock(&m);
    return NULL;
}

int main(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m, &a);
    pthread_barrier_init(&locked, NULL, 2);

    pthread_t t, w;
    /* 1: the owner is gone before anyone asks. */
    pthread_create(&t, NULL, owner_dies, NULL);
    pthread_barrier_wait(&locked);
    pthread_join(t, NULL);
    int r = lock_or_timeout();
    printf("main: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    printf("consistent: %d\n", pthread_mutex_consistent(&m));
    printf("unlock: %d\n", pthread_mutex_unlock(&m));
    printf("lock again: %d\n", lock_or_timeout());
    printf("unlock: %d\n", pthread_mutex_unlock(&m));

    /* 2: a waiter is blocked when the owner dies. */
    pthread_create(&t, NULL, owner_dies, NULL);
    pthread_barrier_wait(&locked);
    pthread_create(&w, NULL, waiter, NULL);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    printf("final lock: %d\n", lock_or_timeout());
    pthread_mutex_unlock(&m);

    /* 3: not made consistent: the mutex becomes unusable. */
    pthread_create(&t, NULL, owner_dies, NULL);
    pthread_barrier_wait(&locked);
    pthread_join(t, NULL);
    r = lock_or_timeout();
    printf("main: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    pthread_mutex_unlock(&m);
    r = lock_or_timeout();
    printf("after unlock without consistent: %s\n", r == ENOTRECOVERABLE ? "ENOTRECOVERABLE" : strerror(r));
    return 0;
}
