#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A fuzz target for softmm-rv's snapshot server: it builds state, reaches
   the snapshot marker, reads its input, writes a large heap area chosen by
   the input, prints checksums and exits with a status the input chooses.
   What it prints of the state from before the marker (the run counter,
   the checksums of the table and of the heap block, where new heap and
   mappings land) is what a fresh run prints only if no run saw another's
   writes, break or mappings.

   Arguments: none (the marker is the snapshot call), "stdin" (no call:
   the server's marker is the first read of standard input), "thread" (a
   thread is still running at the marker), "early" (exits before it).

   Input: "!..." faults, "x<c>..." exits with status c % 64, "loop" spins
   forever, "t..." also runs a thread and a child process after the
   marker; anything else exits 0. */

#define BIG (8u << 20)
#define PAGE 4096u

static unsigned long runs;
static unsigned table[256];
static unsigned char *big;

/* The snapshot server's marker: a7 = "snap"; outside a server it does
   nothing and returns 0 (natively, ENOSYS). */
static long softmm_snapshot(void) {
#ifdef __riscv
    register long a7 __asm__("a7") = 0x736e6170;
    register long a0 __asm__("a0");
    __asm__ volatile("ecall" : "=r"(a0) : "r"(a7) : "memory");
    return a0;
#else
    return 0;
#endif
}

static unsigned long sum(const unsigned char *p, size_t n) {
    unsigned long h = 1469598103934665603ul;
    for (size_t i = 0; i < n; i += 64) h = (h ^ p[i]) * 1099511628211ul;
    return h;
}

static void *add_table(void *arg) {
    unsigned long s = 0;
    for (int i = 0; i < 256; i++) s += table[i];
    *(unsigned long *)arg = s;
    return 0;
}

static void *spin(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    for (unsigned i = 0; i < 256; i++) {
        unsigned c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    big = malloc(BIG);
    if (!big) return 90;
    for (size_t i = 0; i < BIG / 8; i++) ((unsigned long *)big)[i] = i * 0x9e3779b97f4a7c15ul;
    if (!strcmp(mode, "early")) return 3;
    if (!strcmp(mode, "thread")) {
        pthread_t t;
        if (pthread_create(&t, 0, spin, 0)) return 91;
    }
    if (strcmp(mode, "stdin")) softmm_snapshot();

    static unsigned char in[1 << 17];
    size_t n = fread(in, 1, sizeof in, stdin);
    runs++;
    unsigned long before = sum(big, BIG);
    unsigned crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ in[i]) & 0xff] ^ (crc >> 8);
    /* Writes chosen by the input: pages of the big block, the table. */
    for (size_t i = 0; i < n; i++) {
        size_t page = ((size_t)in[i] * 131 + i * 17) % (BIG / PAGE);
        memset(big + page * PAGE, in[i] ^ (int)i, PAGE / 2);
        table[in[i]] ^= (unsigned)i;
    }
    /* More heap (the break), a mapping, both written. */
    size_t more_n = 4096 + n * 64;
    unsigned char *more = malloc(more_n);
    unsigned char *map = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!more || map == MAP_FAILED) return 92;
    memset(more, (int)crc, more_n);
    memset(map, (int)n, 1 << 20);
    printf("run %lu: %zu bytes, crc %08x, before %016lx, after %016lx, more at %+ld, map at %+ld\n", runs, n,
           crc ^ 0xffffffffu, before, sum(big, BIG), (long)(more - big), (long)(map - big));
    fflush(stdout);
    if (n > 0 && in[0] == 't') {
        unsigned long s = 0;
        pthread_t t;
        if (pthread_create(&t, 0, add_table, &s) || pthread_join(t, 0)) return 93;
        pid_t child = fork();
        if (child == 0) {
            printf("child: table sum %lu, big %016lx\n", s, sum(big, BIG));
            fflush(stdout);
            _exit(7);
        }
        int st = 0;
        if (child < 0 || waitpid(child, &st, 0) != child) return 94;
        printf("thread: table sum %lu, child status %d\n", s, WEXITSTATUS(st));
    }
    if (n > 0 && in[0] == '!') *(volatile int *)16 = 1;
    if (n >= 4 && !memcmp(in, "loop", 4))
        for (;;) __asm__ volatile("" ::: "memory");
    if (n > 1 && in[0] == 'x') return in[1] % 64;
    return 0;
}
