#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* glibc's realloc of a block it got from mmap (>= 128 KiB) is mremap with
   MREMAP_MAYMOVE: the buffer grows (in place or moved) and shrinks, and
   every byte written before is still there. */
static unsigned long check(const unsigned char *b, size_t n) {
    unsigned long s = 0;
    for (size_t i = 0; i < n; i += 512) s = s * 31 + b[i];
    return s;
}

int main(void) {
    size_t n = 256 << 10;
    unsigned char *b = malloc(n);
    if (!b) return 2;
    for (size_t i = 0; i < n; i += 512) b[i] = (unsigned char)(i * 7 + (i >> 12));
    unsigned long want = check(b, n);
    /* A neighbour keeps some growths from happening in place. */
    void *other = malloc(300 << 10);
    for (int step = 0; step < 7; step++) {
        size_t m = n * 2;
        b = realloc(b, m);
        if (!b) return 3;
        if (check(b, n) != want) {
            printf("step %d: contents lost\n", step);
            return 4;
        }
        for (size_t i = n; i < m; i += 512) b[i] = (unsigned char)(i * 7 + (i >> 12));
        n = m;
        want = check(b, n);
        printf("grown to %zu KiB: %lu\n", n >> 10, want);
    }
    /* Shrink back in steps. */
    while (n > (256 << 10)) {
        n /= 4;
        b = realloc(b, n);
        if (!b) return 5;
        printf("shrunk to %zu KiB: %lu\n", n >> 10, check(b, n));
    }
    free(other);
    free(b);
    return 0;
}
