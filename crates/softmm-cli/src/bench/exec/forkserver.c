/*
 * A fork server, as a snapshot fuzzer runs its target: a 256 MiB heap
 * written once, then one child per input that writes 1 % of the heap's
 * pages (spread over it) and exits; the parent waits for each.
 *
 *   forkserver INPUTS
 *
 * Prints "checksum N" (the children's exit codes summed) and "elapsed_ns N"
 * for the fork loop alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEAP (256ul << 20)
#define PAGE 4096ul

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    long inputs = argc > 1 ? atol(argv[1]) : 100;
    unsigned char *heap = mmap(NULL, HEAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    size_t pages = HEAP / PAGE;
    for (size_t p = 0; p < pages; p++)
        heap[p * PAGE] = (unsigned char)p;
    size_t dirty = pages / 100;
    size_t stride = pages / dirty;
    uint64_t start = now_ns();
    long checksum = 0;
    for (long i = 0; i < inputs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            unsigned sum = 0;
            for (size_t d = 0; d < dirty; d++) {
                size_t p = (d * stride + (size_t)i) % pages;
                sum += heap[p * PAGE];
                heap[p * PAGE + 8] = (unsigned char)(i + d);
            }
            _exit((int)(sum & 0x7f));
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
            fprintf(stderr, "child %ld did not exit\n", i);
            return 1;
        }
        checksum += WEXITSTATUS(status);
    }
    uint64_t elapsed = now_ns() - start;
    printf("checksum %ld\n", checksum);
    printf("elapsed_ns %llu\n", (unsigned long long)elapsed);
    return 0;
}
