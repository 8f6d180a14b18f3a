/* Process-shared robust and priority-inheritance mutexes in MAP_SHARED
 * memory. A child process locks a robust mutex and dies (exit, then a
 * kill by a signal): the parent's lock answers EOWNERDEAD (the robust-list
 * walk at process exit), the parent makes it consistent, and a second
 * child then locks it normally. A parent blocked in the lock while the
 * owner child dies is woken the same way. A robust PI mutex is handed on
 * by the kernel when its owner process exits, and PI mutexes count
 * across processes. Every lock has a deadline, so a missing walk makes the
 * output differ instead of hanging. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
    pthread_mutex_t robust;
    pthread_mutex_t pi;
    pthread_mutex_t counter_lock;
    volatile int locked; /* the child holds the lock */
    long counter;
};

static struct shared *s;

static const char *name(int r) {
    switch (r) {
    case 0: return "ok";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    default: return strerror(r);
    }
}

static int lock_within(pthread_mutex_t *m, int seconds) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += seconds;
    return pthread_mutex_timedlock(m, &t);
}

static void init(pthread_mutex_t *m, int robust, int protocol) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_setprotocol(&a, protocol);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

static void wait_locked(void) {
    while (!s->locked) usleep(1000);
}

static const char *how(int st) {
    static char b[32];
    if (WIFEXITED(st)) snprintf(b, sizeof b, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(b, sizeof b, "signal %d", WTERMSIG(st));
    else snprintf(b, sizeof b, "other");
    return b;
}

/* A child locks `m` and ends holding it (by _exit, or by SIGKILL from
 * the parent); the parent locks after (or while) it ends. */
static void owner_dies(const char *what, pthread_mutex_t *m, int killed, int parent_waits) {
    s->locked = 0;
    pid_t c = fork();
    if (c == 0) {
        int r = pthread_mutex_lock(m);
        s->locked = 1;
        if (r) _exit(10);
        if (killed || parent_waits) pause();
        _exit(0);
    }
    wait_locked();
    int st = 0;
    if (parent_waits) {
        /* A helper kills the owner after the parent has blocked. */
        pid_t k = fork();
        if (k == 0) {
            usleep(50000);
            kill(c, SIGKILL);
            _exit(0);
        }
        int r = lock_within(m, 10);
        waitpid(k, 0, 0);
        waitpid(c, &st, 0);
        printf("%s: owner %s, blocked lock: %s", what, how(st), name(r));
    } else {
        if (killed) kill(c, SIGKILL);
        waitpid(c, &st, 0);
        int r = lock_within(m, 5);
        printf("%s: owner %s, lock: %s", what, how(st), name(r));
    }
    printf(", consistent: %s", name(pthread_mutex_consistent(m)));
    printf(", unlock: %s\n", name(pthread_mutex_unlock(m)));
}

static void not_recoverable(pthread_mutex_t *m) {
    s->locked = 0;
    pid_t c = fork();
    if (c == 0) {
        pthread_mutex_lock(m);
        s->locked = 1;
        _exit(0);
    }
    waitpid(c, 0, 0);
    int r = lock_within(m, 5);
    printf("unlock without consistent: lock %s, unlock %s", name(r), name(pthread_mutex_unlock(m)));
    printf(", next lock %s\n", name(lock_within(m, 1)));
}

/* The mutex works across processes after recovery: a child locks it
 * normally and the parent's trylock sees it busy. */
static void works_again(pthread_mutex_t *m) {
    s->locked = 0;
    pid_t c = fork();
    if (c == 0) {
        int r = lock_within(m, 5);
        s->locked = 1;
        usleep(20000);
        pthread_mutex_unlock(m);
        _exit(r == 0 ? 0 : 1);
    }
    wait_locked();
    int t = pthread_mutex_trylock(m);
    int st;
    waitpid(c, &st, 0);
    if (t == 0) pthread_mutex_unlock(m);
    printf("after recovery: child %s, parent trylock while held: %s\n", how(st), name(t));
}

/* Four processes add to a counter under a PI mutex. */
static void pi_counter(void) {
    enum { KIDS = 4, ROUNDS = 2000 };
    pid_t kids[KIDS];
    s->counter = 0;
    for (int i = 0; i < KIDS; i++) {
        if ((kids[i] = fork()) == 0) {
            for (int j = 0; j < ROUNDS; j++) {
                if (lock_within(&s->counter_lock, 10)) _exit(1);
                long v = s->counter;
                if (j % 64 == 0) sched_yield();
                s->counter = v + 1;
                pthread_mutex_unlock(&s->counter_lock);
            }
            _exit(0);
        }
    }
    int bad = 0;
    for (int i = 0; i < KIDS; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    printf("pi counter across processes: %ld (want %d), failed children %d\n", s->counter, KIDS * ROUNDS, bad);
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    s = mmap(0, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) return 2;
    init(&s->robust, 1, PTHREAD_PRIO_NONE);
    init(&s->pi, 1, PTHREAD_PRIO_INHERIT);
    init(&s->counter_lock, 0, PTHREAD_PRIO_INHERIT);

    owner_dies("robust, owner exits", &s->robust, 0, 0);
    owner_dies("robust, owner killed", &s->robust, 1, 0);
    owner_dies("robust, waiter blocked", &s->robust, 1, 1);
    works_again(&s->robust);
    owner_dies("robust pi, owner exits", &s->pi, 0, 0);
    owner_dies("robust pi, waiter blocked", &s->pi, 1, 1);
    works_again(&s->pi);
    pi_counter();
    not_recoverable(&s->robust);
    return 0;
}
