/* Priority-inheritance mutexes (FUTEX_LOCK_PI, TRYLOCK_PI, UNLOCK_PI):
 * contended by threads, trylock, timed lock, error checking, and a
 * robust PI mutex whose owner exits holding it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 3000

static pthread_mutex_t m;
static long counter;
static long shadow[THREADS];

static void *worker(void *arg) {
    long id = (long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (pthread_mutex_lock(&m) != 0) return (void *)1;
        long c = counter;
        /* A window for the others to contend: they queue in the kernel. */
        if (i % 64 == 0) usleep(100);
        counter = c + 1;
        shadow[id]++;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static pthread_barrier_t held;
static pthread_mutex_t r;

static void *hold_and_exit(void *arg) {
    (void)arg;
    pthread_mutex_lock(&r);
    pthread_barrier_wait(&held);
    usleep(20000);
    return NULL; /* exits holding r */
}

static void *hold_briefly(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    pthread_barrier_wait(&held);
    usleep(50000);
    pthread_mutex_unlock(&m);
    return NULL;
}

static const char *name(int e);

static void *wait_for_r(void *arg) {
    (void)arg;
    int e = pthread_mutex_lock(&r);
    printf("waiter when the owner exits: %s\n", name(e));
    if (e == EOWNERDEAD) pthread_mutex_consistent(&r);
    pthread_mutex_unlock(&r);
    return NULL;
}

static const char *name(int e) {
    switch (e) {
    case 0: return "0";
    case EBUSY: return "EBUSY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EDEADLK: return "EDEADLK";
    case EPERM: return "EPERM";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    default: return strerror(e);
    }
}

int main(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    printf("setprotocol: %d\n", pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&m, &a);

    /* Contention. */
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        bad += ret != NULL;
    }
    long sum = 0;
    for (int i = 0; i < THREADS; i++) sum += shadow[i];
    printf("counter %ld (want %d), shadow sum %ld, failed locks %d\n", counter, THREADS * ROUNDS, sum, bad);

    /* Error checking: relock is EDEADLK, unlocking a free one EPERM. */
    printf("lock: %s\n", name(pthread_mutex_lock(&m)));
    printf("relock: %s\n", name(pthread_mutex_lock(&m)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&m)));
    printf("unlock again: %s\n", name(pthread_mutex_unlock(&m)));

    /* Held by another thread: trylock EBUSY, timed lock ETIMEDOUT, then
       a lock that waits until it is released. */
    pthread_barrier_init(&held, NULL, 2);
    pthread_t h;
    pthread_create(&h, NULL, hold_briefly, NULL);
    pthread_barrier_wait(&held);
    printf("trylock held: %s\n", name(pthread_mutex_trylock(&m)));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    printf("timedlock held: %s\n", name(pthread_mutex_timedlock(&m, &ts)));
    printf("lock after release: %s\n", name(pthread_mutex_lock(&m)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&m)));
    pthread_join(h, NULL);
    printf("trylock free: %s\n", name(pthread_mutex_trylock(&m)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&m)));

    /* Robust and PI: the owner exits holding it. */
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r, &a);
    pthread_create(&h, NULL, hold_and_exit, NULL);
    pthread_barrier_wait(&held);
    pthread_join(h, NULL);
    int e = pthread_mutex_lock(&r);
    printf("robust pi after owner exit: %s\n", name(e));
    if (e == EOWNERDEAD) printf("consistent: %d\n", pthread_mutex_consistent(&r));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&r)));
    printf("lock again: %s\n", name(pthread_mutex_lock(&r)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&r)));

    /* A waiter blocked in the kernel when the owner exits gets the lock. */
    pthread_t w;
    pthread_create(&h, NULL, hold_and_exit, NULL);
    pthread_barrier_wait(&held);
    pthread_create(&w, NULL, wait_for_r, NULL);
    pthread_join(h, NULL);
    pthread_join(w, NULL);
    printf("final lock: %s\n", name(pthread_mutex_lock(&r)));
    return 0;
}
