/* Processes: fork trees with copy-on-write checks, wait statuses (exit
 * codes, signals), waitid, WNOHANG, ECHILD, getppid, kill, and a
 * process-shared mutex in MAP_SHARED memory used by two children. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int global = 100;
static char big[1 << 20];

static void report(const char *what, int st) {
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else
        printf("%s: status %#x\n", what, st);
    fflush(stdout);
}

static void tree(int depth, int id) {
    /* Each level forks two children; each child changes its copy of the
     * globals and checks that the parent's copy did not change. */
    if (depth == 0)
        exit(id & 0x7f);
    int sum = 0;
    for (int c = 0; c < 2; c++) {
        int child_id = id * 2 + c;
        pid_t p = fork();
        if (p == 0) {
            global = child_id;
            memset(big, child_id, sizeof big);
            tree(depth - 1, child_id);
        }
        int st;
        waitpid(p, &st, 0);
        sum += WEXITSTATUS(st);
    }
    int intact = global == (id == 1 ? 100 : id);
    for (size_t i = 0; i < sizeof big; i += 4096)
        if (big[i] != (char)(id == 1 ? 0 : id))
            intact = 0;
    if (id == 1) {
        printf("tree: sum of leaf codes %d, parent copy intact %d\n", sum, intact);
        fflush(stdout);
        return;
    }
    exit(intact ? (sum & 0x7f) : 0x7f);
}

int main(void) {
    /* Line-buffered: nothing is left in the buffer a child inherits. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t me = getpid();

    pid_t p = fork();
    if (p == 0) {
        printf("child: parent is my ppid %d\n", getppid() == me);
        exit(42);
    }
    int st;
    pid_t w = waitpid(p, &st, 0);
    printf("waited the right child %d\n", w == p);
    report("exit", st);

    tree(3, 1);

    if ((p = fork()) == 0)
        abort();
    waitpid(p, &st, 0);
    report("abort", st);

    if ((p = fork()) == 0) {
        *(volatile int *)8 = 1;
        exit(0);
    }
    waitpid(p, &st, 0);
    report("null store", st);

    if ((p = fork()) == 0)
        for (;;)
            pause();
    printf("WNOHANG while running: %d\n", waitpid(p, &st, WNOHANG));
    kill(p, SIGTERM);
    waitpid(p, &st, 0);
    report("SIGTERM", st);

    if ((p = fork()) == 0)
        for (volatile long i = 0;; i++)
            ;
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    report("SIGKILL while spinning", st);

    if ((p = fork()) == 0) {
        signal(SIGUSR1, SIG_IGN);
        kill(getpid(), SIGUSR1);
        kill(getpid(), SIGCHLD); /* ignored by default */
        exit(9);
    }
    waitpid(p, &st, 0);
    report("ignored signals", st);

    if ((p = fork()) == 0)
        exit(3);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, p, &si, WEXITED);
    printf("waitid %d: signo %d code %d status %d pid ok %d\n", r, si.si_signo, si.si_code, si.si_status,
           si.si_pid == p);

    errno = 0;
    r = wait(&st);
    printf("wait with no children: %d %s\n", r, errno == ECHILD ? "ECHILD" : strerror(errno));
    r = kill(0x3ffffff0, 0);
    printf("kill of no process: %d %s\n", r, errno == ESRCH ? "ESRCH" : strerror(errno));

    /* A process-shared mutex and counter in shared anonymous memory. */
    struct shared {
        pthread_mutex_t m;
        long counter;
    } *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&sh->m, &a);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        if ((kids[i] = fork()) == 0) {
            for (int j = 0; j < 20000; j++) {
                pthread_mutex_lock(&sh->m);
                sh->counter++;
                pthread_mutex_unlock(&sh->m);
            }
            exit(0);
        }
    }
    for (int i = 0; i < 3; i++)
        waitpid(kids[i], &st, 0);
    printf("shared counter %ld\n", sh->counter);
    return 0;
}
