#include <stdio.h>

static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static unsigned long ackermann(unsigned long m, unsigned long n) {
    if (m == 0) return n + 1;
    if (n == 0) return ackermann(m - 1, 1);
    return ackermann(m - 1, ackermann(m, n - 1));
}

/* Deep recursion with a frame that uses the stack. */
static long deep(int n, volatile signed char *prev) {
    /* signed char: plain char is unsigned on RISC-V, signed on x86. */
    volatile signed char frame[64];
    frame[0] = (signed char)n;
    if (n == 0) return prev ? prev[0] : 0;
    return deep(n - 1, frame) + frame[0];
}

static void hanoi(int n, int a, int b, int c, long *moves) {
    if (n == 0) return;
    hanoi(n - 1, a, c, b, moves);
    (*moves)++;
    hanoi(n - 1, c, b, a, moves);
}

int main(void) {
    printf("fib(24) = %ld\n", fib(24));
    printf("ackermann(2, 300) = %lu\n", ackermann(2, 300));
    printf("deep(20000) = %ld\n", deep(20000, 0));
    long moves = 0;
    hanoi(16, 1, 2, 3, &moves);
    printf("hanoi(16) = %ld moves\n", moves);
    return 0;
}
