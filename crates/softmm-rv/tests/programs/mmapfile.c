/* mmap of a file: MAP_SHARED stores reach read(2) and pread (after msync
 * and before), pwrite/write reach the mapping, a second mapping and a
 * forked child share the pages, MAP_PRIVATE (sees the file's later
 * writes on pages it has not written, its stores stay its own), SIGBUS
 * past the end of shared and private mappings,
 * and mmap's descriptor errors. argv[1]: a scratch directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096

static sigjmp_buf jb;
static void on_bus(int sig) {
    siglongjmp(jb, sig);
}

static const char *err(void *r) {
    if (r != MAP_FAILED) return "ok";
    switch (errno) {
    case EACCES: return "EACCES";
    case ENODEV: return "ENODEV";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    default: return strerror(errno);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/mapped", argv[1]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 3;
    char buf[3 * PG];
    for (int i = 0; i < 3 * PG; i++) buf[i] = 'a' + i % 26;
    if (write(fd, buf, sizeof buf) != sizeof buf) return 4;

    char *m = mmap(0, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("mmap shared: %s first=%c\n", err(m), m == MAP_FAILED ? '?' : m[0]);
    if (m == MAP_FAILED) return 5;

    /* Stores through the mapping, msync, read(2). */
    memcpy(m + 10, "MAPPED", 6);
    printf("msync: %d\n", msync(m, 3 * PG, MS_SYNC));
    char r[32] = {0};
    lseek(fd, 8, SEEK_SET);
    printf("read: %zd %.10s\n", read(fd, r, 10), r);
    /* Without msync: the page cache is the file. */
    memcpy(m + PG + 1, "nosync", 6);
    memset(r, 0, sizeof r);
    printf("pread: %zd %.8s\n", pread(fd, r, 8, PG), r);

    /* Writes through the descriptor reach the mapping. */
    pwrite(fd, "PWRITE", 6, 2 * PG + 5);
    printf("mapping sees pwrite: %.6s\n", m + 2 * PG + 5);
    lseek(fd, 100, SEEK_SET);
    write(fd, "WRITE", 5);
    printf("mapping sees write: %.5s, offset now %ld\n", m + 100, (long)lseek(fd, 0, SEEK_CUR));

    /* A second mapping of the same pages, at an offset. */
    char *m2 = mmap(0, PG, PROT_READ, MAP_SHARED, fd, PG);
    printf("second mapping: %s %.6s\n", err(m2), m2 == MAP_FAILED ? "" : m2 + 1);

    /* A forked child stores; the parent sees it. */
    pid_t c = fork();
    if (c == 0) {
        memcpy(m + 200, "CHILD", 5);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    printf("child's store: %.5s\n", m + 200);

    /* MAP_PRIVATE: the file's bytes, stores stay private; a page it has
     * not written sees later writes to the file, a written one does not. */
    char *p = mmap(0, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    printf("private: %s %.6s\n", err(p), p == MAP_FAILED ? "" : p + 10);
    if (p != MAP_FAILED) {
        memcpy(p, "PRIVATE", 7);
        memset(r, 0, sizeof r);
        pread(fd, r, 7, 0);
        printf("file after private store: %.7s\n", r);
        pwrite(fd, "LATER", 5, PG + 40);
        lseek(fd, 20, SEEK_SET);
        write(fd, "HIDDEN", 6);
        printf("private sees a later pwrite: %.5s\n", p + PG + 40);
        printf("private written page keeps its bytes: %.6s %.7s\n", p + 20, p);
        p[2 * PG] = '!';
        memset(r, 0, sizeof r);
        pread(fd, r, 1, 2 * PG);
        printf("file after a second private store: %c, shared sees %c\n", r[0], m[2 * PG]);
        pwrite(fd, "AGAIN", 5, 2 * PG + 100);
        printf("private after writing the page: %.5s\n", p + 2 * PG + 100);
        munmap(p, 3 * PG);
    }

    /* A read-only private mapping reads the file as it is now. */
    char *pr = mmap(0, PG, PROT_READ, MAP_PRIVATE, fd, PG);
    printf("private read-only: %s %.5s\n", err(pr), pr == MAP_FAILED ? "" : pr + 40);
    if (pr != MAP_FAILED) munmap(pr, PG);

    /* Past the end of the file: SIGBUS. */
    char *big = mmap(0, 5 * PG, PROT_READ, MAP_SHARED, fd, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bus;
    sigaction(SIGBUS, &sa, 0);
    int sig = sigsetjmp(jb, 1);
    if (sig == 0)
        printf("past the end: %d\n", big[4 * PG]);
    else
        printf("past the end: signal %s\n", sig == SIGBUS ? "SIGBUS" : "other");
    munmap(big, 5 * PG);

    /* The same past the end of a private mapping, for a load and for a
     * store (no copy of a page the file does not have). */
    char *pb = mmap(0, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    sig = sigsetjmp(jb, 1);
    if (sig == 0)
        printf("private past the end: %d\n", pb[3 * PG + 9]);
    else
        printf("private past the end: signal %s\n", sig == SIGBUS ? "SIGBUS" : "other");
    sig = sigsetjmp(jb, 1);
    if (sig == 0) {
        pb[4 * PG] = 1;
        printf("private store past the end: stored\n");
    } else {
        printf("private store past the end: signal %s\n", sig == SIGBUS ? "SIGBUS" : "other");
    }
    munmap(pb, 5 * PG);

    /* Growing the file through ftruncate makes the pages readable. */
    printf("ftruncate: %d\n", ftruncate(fd, 4 * PG));
    char *g = mmap(0, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("grown page zero: %d\n", g == MAP_FAILED ? -1 : g[3 * PG + 7]);
    g[3 * PG] = 'Z';
    munmap(g, 4 * PG);

    /* Errors. */
    int ro = open(path, O_RDONLY);
    int wo = open(path, O_WRONLY);
    int pp[2];
    pipe(pp);
    printf("shared writable of O_RDONLY: %s\n", err(mmap(0, PG, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0)));
    char *rom = mmap(0, PG, PROT_READ, MAP_SHARED, ro, 0);
    printf("shared read-only of O_RDONLY: %s %.6s\n", err(rom), rom == MAP_FAILED ? "" : rom + 10);
    printf("private writable of O_RDONLY: %s\n", err(mmap(0, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro, 0)));
    printf("O_WRONLY: %s\n", err(mmap(0, PG, PROT_READ, MAP_SHARED, wo, 0)));
    printf("pipe: %s\n", err(mmap(0, PG, PROT_READ, MAP_SHARED, pp[0], 0)));
    printf("bad fd: %s\n", err(mmap(0, PG, PROT_READ, MAP_SHARED, 77, 0)));
    printf("unaligned offset: %s\n", err(mmap(0, PG, PROT_READ, MAP_SHARED, fd, 100)));

    /* Unmapped and closed: the file holds it all. */
    munmap(m, 3 * PG);
    munmap(m2, PG);
    close(fd);
    fd = open(path, O_RDONLY);
    struct stat sb;
    fstat(fd, &sb);
    char all[4 * PG];
    ssize_t n = read(fd, all, sizeof all);
    unsigned long h = 0;
    for (ssize_t i = 0; i < n; i++) h = h * 131 + (unsigned char)all[i];
    printf("file: size %ld read %zd hash %lu %.6s %.5s %c\n", (long)sb.st_size, n, h, all + 10, all + 200, all[3 * PG]);
    close(fd);
    unlink(path);
    return 0;
}
