/* FUTEX_WAIT_REQUEUE_PI and FUTEX_CMP_REQUEUE_PI used directly, as a
 * condition variable over a PI mutex: waiters sleep on a condition word,
 * a broadcast requeues them to the mutex's word, and each returns owning
 * the mutex and unlocks it (by compare-and-swap, else FUTEX_UNLOCK_PI).
 * With the mutex held by the broadcaster and free; a signal to a waiter
 * (its handler runs and the wait goes on) and to a requeued one (EAGAIN
 * after its handler); the calls' errors; and
 * FUTEX_LOCK_PI on a word owned by a thread id no thread has (ESRCH). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WAITERS 4

static _Atomic unsigned cond;
static _Atomic unsigned mutex;
static long counter;
static _Atomic int owned, started;

static long futex(_Atomic unsigned *a, int op, unsigned val, const void *t, _Atomic unsigned *a2, unsigned v3) {
    return syscall(SYS_futex, a, op, val, t, a2, v3);
}

static const char *name(long r) {
    if (r >= 0) return "0";
    switch (errno) {
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOSYS: return "ENOSYS";
    case ESRCH: return "ESRCH";
    case EDEADLK: return "EDEADLK";
    case EPERM: return "EPERM";
    case EINTR: return "EINTR";
    default: return strerror(errno);
    }
}

static void unlock(unsigned tid) {
    unsigned expect = tid;
    if (!atomic_compare_exchange_strong(&mutex, &expect, 0))
        if (futex(&mutex, FUTEX_UNLOCK_PI_PRIVATE, 0, 0, 0, 0) != 0) printf("unlock: %s\n", name(-1));
}

static void *waiter(void *arg) {
    (void)arg;
    unsigned tid = gettid();
    atomic_fetch_add(&started, 1);
    long r = futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE, 0, 0, &mutex, 0);
    if (r != 0) {
        printf("wait_requeue_pi: %s\n", name(r));
        return NULL;
    }
    if ((mutex & FUTEX_TID_MASK) == tid) atomic_fetch_add(&owned, 1);
    counter++; /* under the mutex */
    unlock(tid);
    return NULL;
}

/* Requeue until `n` waiters were woken or moved in all (late ones are
 * caught by a later call: the condition's word never changes). */
static long broadcast(int n) {
    long done = 0, calls = 0;
    while (done < n) {
        long r = futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE, 1, (void *)(long)0x7fffffff, &mutex, 0);
        if (r < 0) {
            printf("cmp_requeue_pi: %s\n", name(r));
            return -1;
        }
        done += r;
        calls++;
        if (done < n) usleep(1000);
    }
    return done;
}

static void round_of(int held) {
    pthread_t t[WAITERS];
    unsigned me = gettid();
    counter = 0;
    atomic_store(&owned, 0);
    atomic_store(&started, 0);
    if (held) {
        long r = futex(&mutex, FUTEX_LOCK_PI_PRIVATE, 0, 0, 0, 0);
        printf("main locks: %s\n", name(r));
    }
    for (int i = 0; i < WAITERS; i++) pthread_create(&t[i], 0, waiter, 0);
    while (atomic_load(&started) < WAITERS) usleep(1000);
    printf("held %d: requeued or woken %ld\n", held, broadcast(WAITERS));
    if (held) {
        printf("mutex word: owner is main %d, waiters bit %d\n", (mutex & FUTEX_TID_MASK) == me,
               (mutex & FUTEX_WAITERS) != 0);
        printf("nobody left on cond: %ld\n",
               futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE, 1, (void *)10L, &mutex, 0));
        unlock(me);
    }
    for (int i = 0; i < WAITERS; i++) pthread_join(t[i], 0);
    printf("held %d: counter %ld, each owned the mutex %d, mutex word %u\n", held, counter,
           atomic_load(&owned) == WAITERS, mutex);
}

static _Atomic int handled;
static void on_usr1(int sig) {
    (void)sig;
    atomic_store(&handled, 1);
}

static void signalled(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: the wait goes on anyway */
    sigaction(SIGUSR1, &sa, 0);
    atomic_store(&owned, 0);
    atomic_store(&started, 0);
    counter = 0;
    pthread_t t;
    pthread_create(&t, 0, waiter, 0);
    while (atomic_load(&started) < 1) usleep(1000);
    usleep(10000);
    pthread_kill(t, SIGUSR1);
    while (!atomic_load(&handled)) usleep(1000);
    printf("signalled waiter: handler ran, requeued or woken %ld\n", broadcast(1));
    pthread_join(t, 0);
    printf("signalled waiter: counter %ld, owned %d, mutex word %u\n", counter, atomic_load(&owned), mutex);
}

/* A waiter the broadcast requeued onto the held mutex, then signalled:
 * Linux ends its call with EAGAIN (EWOULDBLOCK) after the handler rather
 * than restart it, which would wait on the condition again (here until
 * the waiter's deadline). The mutex stays the main thread's. */
static void *requeued_waiter(void *arg) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 3;
    atomic_fetch_add(&started, 1);
    long r = futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE, 0, &ts, &mutex, 0);
    printf("requeued then signalled waiter: %s, handler ran %d\n", name(r), atomic_load(&handled));
    if (r == 0) unlock(gettid());
    return NULL;
}

static void signalled_after_requeue(void) {
    pthread_t t;
    unsigned me = gettid();
    atomic_store(&handled, 0);
    atomic_store(&started, 0);
    printf("main locks: %s\n", name(futex(&mutex, FUTEX_LOCK_PI_PRIVATE, 0, 0, 0, 0)));
    pthread_create(&t, 0, requeued_waiter, 0);
    while (atomic_load(&started) < 1) usleep(1000);
    printf("requeued %ld\n", broadcast(1));
    pthread_kill(t, SIGUSR1);
    pthread_join(t, 0);
    printf("mutex word: owner is main %d, waiters bit %d\n", (mutex & FUTEX_TID_MASK) == me,
           (mutex & FUTEX_WAITERS) != 0);
    unlock(me);
    printf("mutex word after the unlock: %u\n", mutex);
}

static void errors(void) {
    struct timespec ts;
    printf("nr_wake 2: %s\n", name(futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE, 2, (void *)1L, &mutex, 0)));
    printf("cmp_requeue_pi value differs: %s\n",
           name(futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE, 1, (void *)1L, &mutex, 5)));
    printf("cmp_requeue_pi to itself: %s\n",
           name(futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE, 1, (void *)1L, &cond, 0)));
    printf("cmp_requeue_pi with CLOCK_REALTIME: %s\n",
           name(futex(&cond, FUTEX_CMP_REQUEUE_PI_PRIVATE | FUTEX_CLOCK_REALTIME, 1, (void *)1L, &mutex, 0)));
    printf("wait_requeue_pi value differs: %s\n", name(futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE, 7, 0, &mutex, 0)));
    printf("wait_requeue_pi to itself: %s\n", name(futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE, 0, 0, &cond, 0)));
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 20000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    printf("wait_requeue_pi deadline: %s\n", name(futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE, 0, &ts, &mutex, 0)));
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    printf("wait_requeue_pi realtime deadline: %s\n",
           name(futex(&cond, FUTEX_WAIT_REQUEUE_PI_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &ts, &mutex, 0)));
    printf("mutex word after the errors: %u\n", mutex);

    /* An owner thread id that no thread has: Linux's attach_to_pi_owner
     * answers ESRCH (thread ids stop far below FUTEX_TID_MASK). */
    mutex = 0x3ffffff0;
    printf("lock_pi, owner no thread has: %s\n", name(futex(&mutex, FUTEX_LOCK_PI_PRIVATE, 0, 0, 0, 0)));
    printf("lock_pi2, owner no thread has: %s\n", name(futex(&mutex, FUTEX_LOCK_PI2_PRIVATE, 0, 0, 0, 0)));
    printf("trylock_pi, owner no thread has: %s\n", name(futex(&mutex, FUTEX_TRYLOCK_PI_PRIVATE, 0, 0, 0, 0)));
    printf("mutex word: %#x\n", mutex);
    mutex = 0;
}

int main(void) {
    round_of(1);
    round_of(0);
    signalled();
    signalled_after_requeue();
    errors();
    return 0;
}
