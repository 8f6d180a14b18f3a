#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fncode.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

/* mremap called directly with each flag, its errors, and code moved
   away (the old address must fault, not run code a cache kept). */
#define PG 4096UL

static const char *err(void *r) {
    if (r != MAP_FAILED) return "ok";
    switch (errno) {
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT";
    default: return strerror(errno);
    }
}

static void fill(unsigned char *p, size_t n, int seed) {
    for (size_t i = 0; i < n; i += 64) p[i] = (unsigned char)(seed + i / 64);
}

static int same(const unsigned char *p, size_t n, int seed) {
    for (size_t i = 0; i < n; i += 64)
        if (p[i] != (unsigned char)(seed + i / 64)) return 0;
    return 1;
}

static int mapped(void *p, size_t n) {
    /* mprotect of an unmapped range is ENOMEM. */
    return mprotect(p, n, PROT_READ | PROT_WRITE) == 0;
}

static int zeros(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void *map(void *at, size_t n, int flags) {
    return mmap(at, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
}

static sigjmp_buf jb;
static void on_segv(int sig) {
    (void)sig;
    siglongjmp(jb, 1);
}

int main(void) {
    /* A reserved region to carve exact layouts from. */
    unsigned char *r = map(0, 64 * PG, 0);
    if (r == MAP_FAILED) return 2;
    munmap(r, 64 * PG);

    /* Flags 0: shrink, grow in place into free space, no room: ENOMEM. */
    unsigned char *a = map(r, 4 * PG, MAP_FIXED);
    fill(a, 4 * PG, 1);
    void *x = mremap(a, 4 * PG, 2 * PG, 0);
    printf("shrink: %s same=%d tail mapped=%d\n", err(x), x == a, mapped(a + 2 * PG, PG));
    x = mremap(a, 2 * PG, 6 * PG, 0);
    printf("grow in place: %s same=%d kept=%d new zero=%d\n", err(x), x == a, same(a, 2 * PG, 1),
           zeros(a + 2 * PG, 4 * PG));
    unsigned char *blocker = map(a + 6 * PG, PG, MAP_FIXED);
    x = mremap(a, 6 * PG, 8 * PG, 0);
    printf("grow blocked: %s\n", err(x));

    /* MAYMOVE: the blocked growth moves; the old range is gone. */
    fill(a, 6 * PG, 3);
    unsigned char *b = mremap(a, 6 * PG, 8 * PG, MREMAP_MAYMOVE);
    printf("maymove: %s moved=%d kept=%d old mapped=%d\n", err(b), b != a, b != MAP_FAILED && same(b, 6 * PG, 3),
           mapped(a, 6 * PG));
    munmap(blocker, PG);

    /* FIXED: onto a chosen address, replacing what is there. */
    unsigned char *t = map(r + 40 * PG, 8 * PG, MAP_FIXED);
    memset(t, 0x55, 8 * PG);
    unsigned char *c = mremap(b, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
    printf("fixed: %s at=%d kept=%d old mapped=%d\n", err(c), c == t, c != MAP_FAILED && same(c, 6 * PG, 3),
           mapped(b, 8 * PG));
    /* FIXED with a resize. */
    unsigned char *d = mremap(c, 8 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, r);
    printf("fixed shrink: %s at=%d kept=%d\n", err(d), d == r, d != MAP_FAILED && same(d, 2 * PG, 3));

    /* DONTUNMAP: the old range stays mapped and reads zeros. */
    fill(d, 2 * PG, 9);
    unsigned char *e = mremap(d, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0);
    printf("dontunmap: %s moved=%d kept=%d old mapped=%d old zero=%d\n", err(e), e != d,
           e != MAP_FAILED && same(e, 2 * PG, 9), mapped(d, 2 * PG), zeros(d, 2 * PG));

    /* Shared anonymous memory grows and moves with its contents. */
    unsigned char *s = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    fill(s, 2 * PG, 5);
    unsigned char *s2 = mremap(s, 2 * PG, 16 * PG, MREMAP_MAYMOVE);
    printf("shared grow: %s kept=%d\n", err(s2), s2 != MAP_FAILED && same(s2, 2 * PG, 5));
    /* The shared object did not grow: past its end is SIGBUS. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, 0);
    sigaction(SIGBUS, &sa, 0);
    fflush(stdout);
    if (sigsetjmp(jb, 1) == 0)
        printf("past the object: %d\n", s2[3 * PG]);
    else
        printf("past the object faults\n");

    /* Errors. */
    unsigned char *f = map(0, 2 * PG, 0);
    printf("unknown flag: %s\n", err(mremap(f, PG, PG, 8)));
    printf("fixed without maymove: %s\n", err(mremap(f, PG, PG, MREMAP_FIXED, r + 50 * PG)));
    printf("unaligned: %s\n", err(mremap(f + 1, PG, PG, 0)));
    printf("zero new length: %s\n", err(mremap(f, PG, 0, MREMAP_MAYMOVE)));
    printf("dontunmap resize: %s\n", err(mremap(f, PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0)));
    printf("overlap: %s\n", err(mremap(f, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, f + PG)));
    munmap(f, 2 * PG);
    printf("unmapped: %s\n", err(mremap(f, PG, 2 * PG, MREMAP_MAYMOVE)));

    /* Code moved away: run once at the old address (cached), move it, the
       old address faults and the new one runs it. */
    const int prot = PROT_READ | PROT_WRITE | PROT_EXEC;
    unsigned char *code = mmap(0, PG, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    emit(code, 42);
    int sum = 0;
    for (int i = 0; i < 100; i++) sum += ((fn_t)code)();
    unsigned char *moved = mremap(code, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, r + 56 * PG);
    printf("code moved: %s sum=%d new=%d\n", err(moved), sum, moved == MAP_FAILED ? -1 : ((fn_t)moved)());
    fflush(stdout);
    if (sigsetjmp(jb, 1) == 0)
        printf("old address ran: %d\n", ((fn_t)code)());
    else
        printf("old address faults\n");
    return 0;
}
