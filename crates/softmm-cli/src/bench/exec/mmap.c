/*
 * Map, touch and unmap memory in 64 KiB pieces: each piece is an anonymous
 * private mapping, gets one store per page, and is unmapped, until SIZE
 * MiB went through.
 *
 *   mmap SIZE_MIB
 *
 * Prints "checksum N" and "elapsed_ns N".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PIECE (64ul << 10)
#define PAGE 4096ul

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    unsigned long pieces = (mib << 20) / PIECE;
    uint64_t start = now_ns();
    unsigned long checksum = 0;
    for (unsigned long i = 0; i < pieces; i++) {
        volatile unsigned char *p = mmap(NULL, PIECE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        for (unsigned long off = 0; off < PIECE; off += PAGE)
            p[off] = (unsigned char)(i + off / PAGE);
        checksum += p[PIECE - PAGE] + p[0];
        if (munmap((void *)p, PIECE) != 0) {
            perror("munmap");
            return 1;
        }
    }
    uint64_t elapsed = now_ns() - start;
    printf("checksum %lu\n", checksum);
    printf("elapsed_ns %llu\n", (unsigned long long)elapsed);
    return 0;
}
