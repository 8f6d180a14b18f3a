/* A robust mutex whose owner thread exits while holding it: the next
 * locker gets EOWNERDEAD (the kernel's robust-list walk at thread exit),
 * makes it consistent, and the mutex works again. A waiter blocked on the
 * mutex when the owner dies is woken the same way. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t m;
static pthread_barrier_t locked;

static void *owner_dies(void *arg) {
    (void)arg;
    int r = pthread_mutex_lock(&m);
    printf("owner locked: %d\n", r);
    fflush(stdout);
    pthread_barrier_wait(&locked);
    usleep(20000);
    return NULL; /* exits holding the mutex */
}

static void *waiter(void *arg) {
    (void)arg;
    int r = pthread_mutex_lock(&m);
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
    int r = pthread_mutex_lock(&m);
    printf("main: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    printf("consistent: %d\n", pthread_mutex_consistent(&m));
    printf("unlock: %d\n", pthread_mutex_unlock(&m));
    printf("lock again: %d\n", pthread_mutex_lock(&m));
    printf("unlock: %d\n", pthread_mutex_unlock(&m));

    /* 2: a waiter is blocked when the owner dies. */
    pthread_create(&t, NULL, owner_dies, NULL);
    pthread_barrier_wait(&locked);
    pthread_create(&w, NULL, waiter, NULL);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    printf("final lock: %d\n", pthread_mutex_lock(&m));
    pthread_mutex_unlock(&m);

    /* 3: not made consistent: the mutex becomes unusable. */
    pthread_create(&t, NULL, owner_dies, NULL);
    pthread_barrier_wait(&locked);
    pthread_join(t, NULL);
    r = pthread_mutex_lock(&m);
    printf("main: %s\n", r == EOWNERDEAD ? "EOWNERDEAD" : strerror(r));
    pthread_mutex_unlock(&m);
    r = pthread_mutex_lock(&m);
    printf("after unlock without consistent: %s\n", r == ENOTRECOVERABLE ? "ENOTRECOVERABLE" : strerror(r));
    return 0;
}
