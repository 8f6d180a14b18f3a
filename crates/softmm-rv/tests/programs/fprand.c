#include <fenv.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Random IEEE operations in every rounding mode, results and exception
   flags printed in hex: the same on any IEEE 754 machine. NaNs print as
   "nan" (their sign and payload are the architecture's), out-of-range
   conversions to integer are skipped (C leaves them undefined). KEEP pins each operation between its
   fesetround calls. Each rnd() call is its own statement, so both
   compilers draw the same numbers. */
#ifdef __riscv
#define KEEP(x) __asm__ volatile("" : "+f"(x))
#else
#define KEEP(x) __asm__ volatile("" : "+x"(x))
#endif

static uint64_t state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static double pick(void) {
    static const double special[] = {0.0, -0.0, 1.0, -1.0, 3.0, 0.1, 1e308, -1e308, 2.2250738585072014e-308,
                                     4.9e-324, 1e-310, INFINITY, -INFINITY, 0.5, 1.5, 2.5, 1e16, 9007199254740993.0};
    uint64_t r = rnd();
    double d;
    switch (r % 4) {
    case 0:
        return special[(r >> 8) % (sizeof special / sizeof special[0])];
    case 1: /* any bit pattern */
        r = rnd();
        memcpy(&d, &r, 8);
        return d;
    case 2: { /* moderate magnitude (one rnd() per statement: argument order is unspecified) */
        double m = (double)(int64_t)rnd() / 9.2e18;
        int e = (int)(rnd() % 80) - 40;
        return ldexp(m, e);
    }
    default: /* small integers and halves */
        return (double)((int64_t)(rnd() % 2001) - 1000) / 2.0;
    }
}

static void hexd(double d) {
    uint64_t b;
    memcpy(&b, &d, 8);
    if (isnan(d))
        printf(" nan");
    else
        printf(" %016llx", (unsigned long long)b);
}

static void hexf(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if (isnan(f))
        printf(" nan");
    else
        printf(" %08x", b);
}

static void flags(void) {
    int e = fetestexcept(FE_ALL_EXCEPT);
    printf(" %c%c%c%c%c", e & FE_INVALID ? 'V' : '-', e & FE_DIVBYZERO ? 'Z' : '-', e & FE_OVERFLOW ? 'O' : '-',
           e & FE_UNDERFLOW ? 'U' : '-', e & FE_INEXACT ? 'X' : '-');
    feclearexcept(FE_ALL_EXCEPT);
}

#define OP(expr, T, print)                                                                                              \
    do {                                                                                                               \
        feclearexcept(FE_ALL_EXCEPT);                                                                                  \
        fesetround(mode);                                                                                              \
        T r_ = (expr);                                                                                                 \
        KEEP(r_);                                                                                                      \
        fesetround(FE_TONEAREST);                                                                                      \
        print(r_);                                                                                                     \
        flags();                                                                                                       \
    } while (0)

int main(void) {
    const int modes[] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    for (int i = 0; i < 1000; i++) {
        double a = pick(), b = pick(), c = pick();
        float fa = (float)a, fb = (float)b;
        for (int m = 0; m < 4; m++) {
            int mode = modes[m];
            printf("%d.%d", i, m);
            KEEP(a);
            KEEP(b);
            KEEP(fa);
            KEEP(fb);
            OP(a + b, double, hexd);
            OP(a - b, double, hexd);
            OP(a * b, double, hexd);
            OP(a / b, double, hexd);
            OP(sqrt(fabs(a)), double, hexd);
            OP(fa + fb, float, hexf);
            OP(fa * fb, float, hexf);
            OP(fa / fb, float, hexf);
            OP(sqrtf(fabsf(fa)), float, hexf);
            OP((float)a, float, hexf);
            uint64_t bits = rnd();
            int64_t i1 = (int64_t)(bits >> (rnd() % 64));
            bits = rnd();
            int64_t i2 = (int64_t)(bits >> (rnd() % 64));
            OP((double)i1, double, hexd);
            OP((float)i2, float, hexf);
            float fc = (float)c;
            KEEP(fc);
            OP(fma(a, b, c), double, hexd);
            OP(fmaf(fa, fb, fc), float, hexf);
            OP(fa - fb, float, hexf);
            if (fabs(a) < 9e18) {
                feclearexcept(FE_ALL_EXCEPT);
                fesetround(mode);
                long l = lrint(a);
                fesetround(FE_TONEAREST);
                printf(" %ld", l);
                flags();
                long t = (long)a;
                printf(" %ld", t);
                flags();
            }
            feclearexcept(FE_ALL_EXCEPT);
            int lt = a < b, eq = a == b;
            printf(" %d%d", lt, eq);
            flags();
            printf("\n");
        }
    }
    return 0;
}
