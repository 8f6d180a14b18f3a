/* Signal delivery: a guard page and a SIGSEGV handler reading si_addr and
 * si_code and leaving with siglongjmp; SEGV_ACCERR vs SEGV_MAPERR; raise()
 * with a handler (SA_SIGINFO fields, the mask inside the handler);
 * sigprocmask blocking and unblocking; SA_RESETHAND; SA_NODEFER; a handler
 * on an alternate stack; the registers and FP state across a handler;
 * signals between threads (pthread_kill) and processes (kill + SIGCHLD);
 * sigsuspend; SA_RESTART around waitpid; default actions seen by wait. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile void *fault_addr;
static volatile int fault_code, fault_signo;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    fault_signo = sig;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    siglongjmp(env, 1);
}

static volatile int got, got_sig, got_code, calls, depth, max_depth;
static volatile pid_t got_pid;
static volatile int mask_has_self, mask_has_extra;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got++;
    got_sig = sig;
    got_code = si->si_code;
    got_pid = si->si_pid;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    mask_has_self = sigismember(&cur, SIGUSR1);
    mask_has_extra = sigismember(&cur, SIGUSR2);
}

static void on_nodefer(int sig) {
    depth++;
    calls++;
    if (depth > max_depth)
        max_depth = depth;
    if (calls < 3)
        raise(sig);
    depth--;
}

static volatile uintptr_t handler_sp;
static void on_alt(int sig) {
    (void)sig;
    int local;
    handler_sp = (uintptr_t)&local;
}

static volatile double fp_in_handler;
static void clobber(int sig) {
    (void)sig;
    volatile double x = 1.0;
    for (int i = 0; i < 10; i++)
        x = x * 3.5 + 1.25;
    fp_in_handler = x;
}

static volatile int chld;
static void on_chld(int sig) {
    (void)sig;
    chld++;
}

static pthread_t main_thread;
static volatile int thread_got;
static void on_usr2(int sig) {
    (void)sig;
    thread_got = pthread_equal(pthread_self(), main_thread) ? 1 : 2;
}
static void *sends_to_main(void *arg) {
    (void)arg;
    pthread_kill(main_thread, SIGUSR2);
    return NULL;
}

static void report(const char *what, int st) {
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long page = sysconf(_SC_PAGESIZE);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);

    /* A buffer with a guard page after it. */
    char *buf = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(buf + 2 * page, page, PROT_NONE);
    volatile int i = 0;
    if (sigsetjmp(env, 1) == 0) {
        for (i = 0;; i++)
            buf[i] = 1;
    }
    /* (Compilers may count i up before or after the faulting store.) */
    printf("guard page: signal %d, code %s, offset of si_addr %ld, stopped at the guard %d\n", fault_signo,
           fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other", (long)((char *)fault_addr - buf),
           i == 2 * page || i == 2 * page + 1);

    /* An unmapped address. */
    munmap(buf, 3 * page);
    if (sigsetjmp(env, 1) == 0)
        (void)*(volatile int *)(buf + 100);
    printf("unmapped: code %s, si_addr right %d\n", fault_code == SEGV_MAPERR ? "SEGV_MAPERR" : "other",
           fault_addr == buf + 100);

    /* A write to read-only memory. */
    char *ro = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sigsetjmp(env, 1) == 0)
        ro[5] = 1;
    printf("read-only: code %s, si_addr right %d\n", fault_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
           fault_addr == ro + 5);

    /* The mask was restored by siglongjmp: SIGSEGV is not blocked. */
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    printf("SIGSEGV blocked after siglongjmp: %d\n", sigismember(&cur, SIGSEGV));

    /* raise() with a SA_SIGINFO handler and an extra mask bit. */
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("raise: got %d sig %d code %s pid right %d, in handler: self blocked %d, sa_mask blocked %d\n", got,
           got_sig, got_code == SI_TKILL ? "SI_TKILL" : "other", got_pid == getpid(), mask_has_self,
           mask_has_extra);
    kill(getpid(), SIGUSR1);
    printf("kill self: got %d code %s\n", got, got_code == SI_USER ? "SI_USER" : "other");

    /* Blocked: pending until unblocked. */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigprocmask(SIG_BLOCK, &s, NULL);
    raise(SIGUSR1);
    raise(SIGUSR1); /* a standard signal is pending once */
    sigset_t pend;
    sigpending(&pend);
    printf("blocked: got %d, pending %d\n", got, sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    printf("unblocked: got %d\n", got);

    /* SA_RESETHAND: the second one takes the default action (ignored
     * here: SIGURG's default is to ignore). */
    got = 0;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigaction(SIGURG, &sa, NULL);
    raise(SIGURG);
    raise(SIGURG);
    struct sigaction now;
    sigaction(SIGURG, NULL, &now);
    printf("SA_RESETHAND: got %d, handler reset %d\n", got, now.sa_handler == SIG_DFL);

    /* SA_NODEFER: the handler may nest. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_nodefer;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    printf("SA_NODEFER: max depth %d, calls %d\n", max_depth, calls);
    sa.sa_flags = 0;
    max_depth = depth = calls = 0;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    printf("without SA_NODEFER: max depth %d, calls %d\n", max_depth, calls);

    /* An alternate stack. */
    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    sa.sa_handler = on_alt;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGALRM, &sa, NULL);
    raise(SIGALRM);
    printf("SA_ONSTACK: handler on the alternate stack %d\n",
           handler_sp >= (uintptr_t)ss.ss_sp && handler_sp < (uintptr_t)ss.ss_sp + ss.ss_size);

    /* Registers and FP state survive a handler that uses them. */
    sa.sa_handler = clobber;
    sa.sa_flags = 0;
    sigaction(SIGHUP, &sa, NULL);
    volatile double a = 2.5, b = 0.1;
    double before = a * b;
    raise(SIGHUP);
    printf("FP across a handler: %d, handler computed %.3f\n", a * b == before, fp_in_handler);

    /* A signal from another thread, handled on the main thread. */
    main_thread = pthread_self();
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, sends_to_main, NULL);
    pthread_join(t, NULL);
    printf("pthread_kill: handled on %s\n", thread_got == 1 ? "the main thread" : "another thread");

    /* SIGCHLD with a handler, and waitpid restarted (SA_RESTART). */
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    pid_t p = fork();
    if (p == 0) {
        usleep(20000);
        _exit(4);
    }
    int st;
    pid_t w = waitpid(p, &st, 0);
    printf("SIGCHLD handled %d, waitpid restarted %d\n", chld, w == p);
    report("child", st);

    /* sigsuspend waits for a signal sent by a child. */
    sigprocmask(SIG_BLOCK, &s, NULL);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    got = 0;
    pid_t parent = getpid();
    if ((p = fork()) == 0) {
        kill(parent, SIGUSR1);
        _exit(0);
    }
    sigset_t empty;
    sigemptyset(&empty);
    int r = sigsuspend(&empty);
    printf("sigsuspend: %d %s, got %d\n", r, errno == EINTR ? "EINTR" : strerror(errno), got);
    waitpid(p, &st, 0);

    /* Default actions as the parent sees them. */
    int sigs[] = {SIGTERM, SIGUSR1, SIGQUIT, SIGCHLD};
    for (int k = 0; k < 4; k++) {
        if ((p = fork()) == 0) {
            signal(sigs[k], SIG_DFL);
            sigprocmask(SIG_SETMASK, &empty, NULL);
            raise(sigs[k]);
            _exit(0);
        }
        waitpid(p, &st, 0);
        char what[32];
        snprintf(what, sizeof what, "raise(%d)", sigs[k]);
        report(what, st);
    }
    /* A handler blocked while its fault happens: the process dies. */
    if ((p = fork()) == 0) {
        sigset_t seg;
        sigemptyset(&seg);
        sigaddset(&seg, SIGSEGV);
        sigprocmask(SIG_BLOCK, &seg, NULL);
        *(volatile int *)8 = 0;
        _exit(0);
    }
    waitpid(p, &st, 0);
    report("fault with SIGSEGV blocked", st);
    return 0;
}
