#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fncode.h"

/* Coherence of softmm-rv's decoded-instruction cache, one rule per part.
   Each part first runs a small function, so the hart has it decoded and
   cached, then changes what that address holds (or whether it may be
   fetched) through exactly one path, and runs it again. Only the
   invalidation that path owes makes the second run see the change; with
   it skipped the hart would run its cached decoding of the old code and
   print the old value (or not fault). jit.c covers rewriting through
   __builtin___clear_cache and code gaining PROT_EXEC; the parts here are
   what it does not isolate: fence.i alone, PROT_EXEC taken from code that
   ran and given back, a replacement mapping with no flush call at all, a
   dropped private copy, and a fork's two versions of one page. */
/* This hart's instruction fetches see its earlier stores: fence.i, no
   system call (x86 keeps instruction fetch coherent by itself). */
static void fence_i(void) {
#ifdef __riscv
    __asm__ volatile("fence.i" ::: "memory");
#endif
}

/* The portable flush: glibc's __riscv_flush_icache (riscv_flush_icache
   system call) on riscv64. */
static void clear_cache(unsigned char *p) { __builtin___clear_cache((char *)p, (char *)p + 16); }

static int run(unsigned char *p) { return ((fn_t)p)(); }

static int hot(unsigned char *p) {
    int sum = 0;
    for (int i = 0; i < 500; i++) sum += run(p);
    return sum / 500;
}

static void *map_rwx(void) {
    void *p = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(10);
    return p;
}

/* A memfd holding the code of a function returning `value`, written with
   write(2): no store of this process ever touches its pages. */
static int code_file(const char *name, int value) {
    unsigned char page[4096];
    memset(page, 0, sizeof page);
    put_code(page, value);
    int fd = memfd_create(name, 0);
    if (fd < 0 || write(fd, page, sizeof page) != (long)sizeof page) exit(11);
    return fd;
}

/* (a) Rewritten code after fence.i alone. A store to a present writable
   page raises no MMU notifier event, so nothing but this hart's fence.i
   (ICache::flush) drops the decoded `li a0, 1`: without it the second
   line would say 1. */
static void fence_i_alone(void) {
    unsigned char *p = map_rwx();
    put_code(p, 1);
    fence_i();
    printf("fence.i: hot %d", hot(p));
    put_code(p, 2);
    fence_i();
    printf(", rewritten %d", run(p));
    put_code(p, 3);
    fence_i();
    printf(", again %d\n", hot(p));
    munmap(p, 4096);
}

static sigjmp_buf jb;
static volatile int segv_code;
static void *volatile segv_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    segv_code = si->si_code;
    segv_addr = si->si_addr;
    siglongjmp(jb, sig);
}

static void run_guarded(const char *what, unsigned char *code) {
    segv_addr = 0;
    if (sigsetjmp(jb, 1) == 0)
        printf("  %s: ran %d\n", what, run(code));
    else
        printf("  %s: SIGSEGV %s at the code %d\n", what, segv_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
               segv_addr == (void *)code);
}

/* (b) PROT_EXEC taken from code that ran, then given back. mprotect to
   PROT_READ is an Event::Protection over a cached page: the watch's
   generation moves and the hart refetches, which faults (SEGV_ACCERR at
   the code). Skipped, the cached decoding would run: "ran 4" instead of
   the fault. Given back, the code runs again (the fault left nothing
   behind). */
static void exec_taken_and_given_back(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, &old);
    unsigned char *p = map_rwx();
    put_code(p, 4);
    clear_cache(p);
    printf("mprotect: hot %d\n", hot(p));
    mprotect(p, 4096, PROT_READ);
    run_guarded("PROT_READ", p);
    run_guarded("PROT_READ again", p);
    mprotect(p, 4096, PROT_READ | PROT_EXEC);
    run_guarded("PROT_READ|PROT_EXEC", p);
    mprotect(p, 4096, PROT_READ | PROT_WRITE);
    run_guarded("PROT_READ|PROT_WRITE", p);
    mprotect(p, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    run_guarded("PROT_READ|PROT_WRITE|PROT_EXEC", p);
    munmap(p, 4096);
    sigaction(SIGSEGV, &old, 0);
}

/* (c) Other code mapped where cached code was, with no flush call: two
   memfds written with write(2), mapped in turn at one address. munmap
   and a MAP_FIXED mapping over the old one are Event::Unmap over the
   cached page; skipped, the hart would run the first file's decoding
   (5) after each replacement. */
static void replaced_mapping(void) {
    int a = code_file("five", 5), b = code_file("six", 6);
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, a, 0);
    if (p == MAP_FAILED) exit(12);
    printf("replaced: first %d", hot(p));
    munmap(p, 4096);
    unsigned char *q = mmap(p, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, b, 0);
    if (q != p) exit(13);
    printf(", after munmap and mmap %d", hot(q));
    q = mmap(p, 4096, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED, a, 0);
    if (q != p) exit(14);
    printf(", after MAP_FIXED over it %d\n", hot(q));
    munmap(q, 4096);
    close(a);
    close(b);
}

/* A private copy of a file page dropped: MADV_DONTNEED on a private file
   mapping takes the process's rewritten copy away and the page reads the
   file again. That is an Event::Clear over a cached page; skipped, the
   hart would go on running the rewritten code (8) instead of the file's
   (7). */
static void dropped_private_copy(void) {
    int fd = code_file("seven", 7);
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) exit(15);
    printf("dontneed: file %d", hot(p));
    put_code(p, 8);
    clear_cache(p);
    printf(", private copy %d", hot(p));
    if (madvise(p, 4096, MADV_DONTNEED)) exit(16);
    printf(", after MADV_DONTNEED %d\n", hot(p));
    munmap(p, 4096);
    close(fd);
}

/* (d) Copy-on-write: parent and child both ran the code of one private
   page before the child rewrote it. Each process has its own watch and
   harts: the child's flush (riscv_flush_icache through its own watch)
   drops the child's decoding, so it runs its new code (skipped, or sent
   to the parent's watch, the child would print 9 twice); the child's
   store went to its own copy of the frame, so the parent still runs 9,
   then its own rewrite after its own flush. */
static void fork_two_versions(void) {
    unsigned char *p = map_rwx();
    put_code(p, 9);
    clear_cache(p);
    printf("fork: parent before %d\n", hot(p));
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) exit(17);
    if (child == 0) {
        int before = hot(p);
        put_code(p, 10);
        clear_cache(p);
        printf("fork: child before %d, after its rewrite %d\n", before, hot(p));
        fflush(stdout);
        _exit(0);
    }
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) exit(18);
    printf("fork: parent after the child %d", hot(p));
    put_code(p, 11);
    fence_i();
    printf(", after its own rewrite %d\n", hot(p));
    munmap(p, 4096);
}

int main(void) {
    fence_i_alone();
    exec_taken_and_given_back();
    replaced_mapping();
    dropped_private_copy();
    fork_two_versions();
    return 0;
}
