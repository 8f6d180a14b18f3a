#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Small allocations come from brk; big ones (>= 128 KiB by default) from mmap. */
int main(void) {
    unsigned long sum = 0;
    for (int round = 0; round < 200; round++) {
        char *p[64];
        for (int i = 0; i < 64; i++) {
            size_t n = 16 + (size_t)((round * 131 + i * 17) % 2000);
            p[i] = malloc(n);
            if (!p[i]) return 2;
            memset(p[i], i, n);
            sum += (unsigned char)p[i][n - 1] + n;
        }
        for (int i = 0; i < 64; i += 2) free(p[i]);
        for (int i = 1; i < 64; i += 2) free(p[i]);
    }
    printf("small sum %lu\n", sum);
    for (int k = 1; k <= 8; k++) {
        size_t n = (size_t)k << 20;
        unsigned char *b = malloc(n);
        if (!b) return 3;
        for (size_t i = 0; i < n; i += 4096) b[i] = (unsigned char)(i >> 12);
        unsigned long s = 0;
        for (size_t i = 0; i < n; i += 4096) s += b[i];
        b = realloc(b, n * 2);
        if (!b) return 4;
        b[n * 2 - 1] = 7;
        printf("big %zu MiB: %lu %d\n", n >> 20, s, b[n * 2 - 1]);
        free(b);
    }
    int *c = calloc(100000, sizeof(int));
    long z = 0;
    for (int i = 0; i < 100000; i++) z += c[i];
    printf("calloc zero: %ld\n", z);
    free(c);
    return 0;
}
