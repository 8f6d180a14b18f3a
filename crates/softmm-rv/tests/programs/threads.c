/* Threads: mutex and atomic counters, a condition-variable queue, a
 * barrier, thread-local storage, join values, pthread_exit, and how a
 * process ends while threads still run (exit in main, exit in a thread,
 * a fault in a thread). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NT 4
#define ITERS 20000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static long atomic_counter;
static __thread long tls_value = 7;

static void *count(void *arg) {
    long id = (long)arg;
    tls_value = id * 100;
    for (int i = 0; i < ITERS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        __atomic_fetch_add(&atomic_counter, 1, __ATOMIC_SEQ_CST);
    }
    return (void *)(tls_value + 1);
}

#define QN 8
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER, not_full = PTHREAD_COND_INITIALIZER;
static int queue[QN], qhead, qlen;

static void *producer(void *arg) {
    int n = (int)(long)arg;
    for (int i = 1; i <= n; i++) {
        pthread_mutex_lock(&lock);
        while (qlen == QN)
            pthread_cond_wait(&not_full, &lock);
        queue[(qhead + qlen++) % QN] = i;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *consumer(void *arg) {
    int n = (int)(long)arg;
    long sum = 0;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&lock);
        while (qlen == 0)
            pthread_cond_wait(&not_empty, &lock);
        sum += queue[qhead];
        qhead = (qhead + 1) % QN;
        qlen--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&lock);
    }
    return (void *)sum;
}

static pthread_barrier_t barrier;
static long slots[NT];
static long seen[NT][3];

static void *phases(void *arg) {
    long id = (long)arg;
    for (int phase = 0; phase < 3; phase++) {
        slots[id] = (id + 1) * (phase + 1);
        pthread_barrier_wait(&barrier);
        long s = 0;
        for (int j = 0; j < NT; j++)
            s += slots[j];
        seen[id][phase] = s;
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

static void *exits_early(void *arg) {
    (void)arg;
    pthread_exit((void *)42);
    return NULL;
}

static void *blocks_forever(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;)
        pthread_cond_wait(&not_empty, &lock);
    return NULL;
}

static void *spins_forever(void *arg) {
    (void)arg;
    for (volatile long i = 0;; i++)
        ;
    return NULL;
}

static void *exits_process(void *arg) {
    (void)arg;
    usleep(1000);
    exit(5);
}

static void *faults(void *arg) {
    (void)arg;
    usleep(1000);
    *(volatile int *)16 = 1;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    pthread_t t[NT + 2];
    if (!strcmp(mode, "exit-main")) {
        /* Threads blocked in a futex and spinning: exit ends them all. */
        pthread_create(&t[0], NULL, blocks_forever, NULL);
        pthread_create(&t[1], NULL, spins_forever, NULL);
        usleep(1000);
        printf("main exits with 3\n");
        fflush(stdout);
        exit(3);
    }
    if (!strcmp(mode, "exit-thread")) {
        pthread_create(&t[0], NULL, exits_process, NULL);
        pthread_create(&t[1], NULL, spins_forever, NULL);
        pthread_join(t[0], NULL);
        printf("not reached\n");
        return 0;
    }
    if (!strcmp(mode, "fault-thread")) {
        pthread_create(&t[0], NULL, faults, NULL);
        pthread_join(t[0], NULL);
        printf("not reached\n");
        return 0;
    }

    for (long i = 0; i < NT; i++)
        pthread_create(&t[i], NULL, count, (void *)i);
    for (int i = 0; i < NT; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d returned %ld\n", i, (long)r);
    }
    printf("counter %ld atomic %ld tls in main %ld\n", counter, atomic_counter, tls_value);

    pthread_create(&t[0], NULL, producer, (void *)5000L);
    pthread_create(&t[1], NULL, consumer, (void *)5000L);
    void *sum;
    pthread_join(t[0], NULL);
    pthread_join(t[1], &sum);
    printf("queue sum %ld\n", (long)sum);

    pthread_barrier_init(&barrier, NULL, NT);
    for (long i = 0; i < NT; i++)
        pthread_create(&t[i], NULL, phases, (void *)i);
    for (int i = 0; i < NT; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NT; i++)
        printf("thread %d saw %ld %ld %ld\n", i, seen[i][0], seen[i][1], seen[i][2]);

    void *r;
    pthread_create(&t[0], NULL, exits_early, NULL);
    pthread_join(t[0], &r);
    printf("pthread_exit value %ld\n", (long)r);
    printf("self is not a created thread: %d\n", pthread_equal(pthread_self(), t[0]));
    return 0;
}
