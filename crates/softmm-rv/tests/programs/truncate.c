/* Shared file mappings that outlive their file's end: stores made visible
 * with msync, then ftruncate down under a live mapping (the pages past the
 * new end give SIGBUS with si_code BUS_ADRERR and the faulting address,
 * the partial last page reads zeros past the end, a private mapping's
 * pages past the end fault too, its own copies of them included), growth back (zeros, not the old
 * bytes); a memfd mapped MAP_SHARED by a parent and its forked children,
 * truncated the same way; msync's errors. Argument: a scratch directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096

static sigjmp_buf jb;
static volatile int bus_code;
static volatile char *volatile bus_addr;

static void on_bus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    bus_code = si->si_code;
    bus_addr = si->si_addr;
    siglongjmp(jb, sig);
}

/* Load (or store) one byte; say what happened, offsets from `base`. */
static void touch(const char *what, char *base, long off, int store) {
    bus_addr = 0;
    int sig = sigsetjmp(jb, 1);
    if (sig == 0) {
        if (store) {
            base[off] = 'S';
            printf("%s: stored\n", what);
        } else {
            printf("%s: %d\n", what, ((volatile char *)base)[off]);
        }
    } else {
        printf("%s: signal %s code %s at +%ld\n", what, sig == SIGBUS ? "SIGBUS" : "other",
               bus_code == BUS_ADRERR ? "BUS_ADRERR" : "other", (long)((char *)bus_addr - base));
    }
}

static const char *err(int r) {
    return r == 0 ? "ok" : errno == EINVAL ? "EINVAL" : errno == ENOMEM ? "ENOMEM" : strerror(errno);
}

static void file_truncation(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/truncate.dat", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4 * PG)) {
        printf("setup failed\n");
        return;
    }
    char *m = mmap(0, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *p = mmap(0, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    for (int i = 0; i < 4; i++) memset(m + i * PG, 'a' + i, PG);
    printf("msync: %s\n", err(msync(m, 4 * PG, MS_SYNC)));
    p[3 * PG] = 'P'; /* the private mapping's own copy of page 3 */
    char buf[8] = {0};
    pread(fd, buf, 4, 3 * PG + 10);
    printf("file after msync: %s\n", buf);

    printf("ftruncate down: %d\n", ftruncate(fd, PG + 100));
    touch("page 0", m, 5, 0);
    touch("last page before the end", m, PG + 99, 0);
    touch("last page past the end", m, PG + 200, 0);
    touch("page 2 load", m, 2 * PG + 1, 0);
    touch("page 3 store", m, 3 * PG + 8, 1);
    touch("private page 0", p, 7, 0);
    touch("private page 2", p, 2 * PG, 0);
    touch("private copy of page 3", p, 3 * PG, 0);

    /* A child forked now sees the same. */
    pid_t c = fork();
    if (c == 0) {
        touch("child page 2", m, 2 * PG + 3, 0);
        touch("child page 1", m, PG + 1, 0);
        fflush(stdout);
        _exit(0);
    }
    waitpid(c, 0, 0);

    printf("ftruncate up: %d\n", ftruncate(fd, 4 * PG));
    touch("regrown page 2", m, 2 * PG + 1, 0);
    touch("regrown page 1 tail", m, PG + 200, 0);
    touch("private regrown page 2", p, 2 * PG + 5, 0);
    touch("private regrown page 3, its copy gone", p, 3 * PG, 0);
    m[2 * PG] = 'N';
    pread(fd, buf, 1, 2 * PG);
    printf("store after regrowth reaches the file: %c\n", buf[0]);
    munmap(p, 4 * PG);
    munmap(m, 4 * PG);
    close(fd);
    unlink(path);
}

static void memfd_shared(void) {
    int fd = memfd_create("shared", 0);
    if (fd < 0 || ftruncate(fd, 2 * PG)) {
        printf("memfd setup failed\n");
        return;
    }
    char *m = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    strcpy(m, "from the parent");
    pid_t c = fork();
    if (c == 0) {
        printf("child sees: %s\n", m);
        strcpy(m + PG, "from the child");
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    printf("parent sees: %s\n", m + PG);
    char buf[32] = {0};
    pread(fd, buf, 14, PG);
    printf("memfd read: %s\n", buf);
    pwrite(fd, "written", 7, 0);
    printf("mapping after pwrite: %.15s\n", m);
    /* A second mapping of the same memfd, in a child that maps it anew. */
    c = fork();
    if (c == 0) {
        char *n = mmap(0, PG, PROT_READ, MAP_SHARED, fd, PG);
        printf("child's own mapping: %s\n", n == MAP_FAILED ? "failed" : n);
        _exit(0);
    }
    waitpid(c, &st, 0);
    printf("memfd ftruncate down: %d\n", ftruncate(fd, PG));
    touch("memfd page 1", m, PG + 2, 0);
    touch("memfd page 0", m, 2, 0);
    munmap(m, 2 * PG);
    close(fd);
}

static void msync_errors(void) {
    char *a = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("msync anonymous: %s\n", err(msync(a, PG, MS_SYNC)));
    printf("msync unaligned: %s\n", err(msync(a + 1, PG, MS_SYNC)));
    printf("msync both flags: %s\n", err(msync(a, PG, MS_SYNC | MS_ASYNC)));
    printf("msync bad flag: %s\n", err(msync(a, PG, 8)));
    munmap(a + PG, PG);
    printf("msync over a hole: %s\n", err(msync(a, 2 * PG, MS_ASYNC)));
    munmap(a, PG);
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IONBF, 0);
    if (argc < 2) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, 0);
    file_truncation(argv[1]);
    memfd_shared();
    msync_errors();
    return 0;
}
