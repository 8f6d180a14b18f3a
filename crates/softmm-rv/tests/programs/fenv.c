#include <fenv.h>
#include <math.h>
#include <stdio.h>

/* Rounding modes and exception flags through <fenv.h> (frm and fflags on
   RISC-V, MXCSR on x86-64): both follow IEEE 754, so the results agree.
   KEEP pins each result where it is computed: compilers move floating-point
   operations across fesetround calls otherwise, and would fuse a*b+c. */
#ifdef __riscv
#define KEEP(x) __asm__ volatile("" : "+f"(x))
#else
#define KEEP(x) __asm__ volatile("" : "+x"(x))
#endif

volatile double one = 1.0, three = 3.0, zero = 0.0, big = 1e308, two = 2.0, tiny = 1e-310;
volatile float fone = 1.0f, fthree = 3.0f, fbig = 3e38f;
volatile long lv = 9007199254740993L; /* 2^53 + 1: not a double */

static void flags(const char *what) {
    printf("%-10s %s%s%s%s%s\n", what, fetestexcept(FE_INVALID) ? "NV " : "", fetestexcept(FE_DIVBYZERO) ? "DZ " : "",
           fetestexcept(FE_OVERFLOW) ? "OF " : "", fetestexcept(FE_UNDERFLOW) ? "UF " : "",
           fetestexcept(FE_INEXACT) ? "NX" : "");
    feclearexcept(FE_ALL_EXCEPT);
}

int main(void) {
    const int modes[] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    const char *names[] = {"nearest", "upward", "downward", "towardzero"};
    for (int m = 0; m < 4; m++) {
        fesetround(modes[m]);
        double q = one / three, nq = -one / three, s = sqrt(two);
        KEEP(q);
        KEEP(nq);
        KEEP(s);
        double p = three * q;
        KEEP(p);
        float fq = fone / fthree;
        KEEP(fq);
        float fs = fq * fthree;
        KEEP(fs);
        fs = fs + fq;
        KEEP(fs);
        double cv = (double)lv, sum = big + big, sub = tiny * tiny, fcv = (float)q;
        KEEP(cv);
        KEEP(sum);
        KEEP(sub);
        KEEP(fcv);
        long r = lrint(2.5), nr = lrint(-2.5);
        fesetround(FE_TONEAREST);
        printf("%-10s %a %a %a %a %a %a %a %ld %ld %g %a %a\n", names[m], q, nq, s, p, (double)fq, (double)fs, cv, r, nr,
               sum, sub, fcv);
    }
    feclearexcept(FE_ALL_EXCEPT);
    volatile double r;
    r = one + two;
    flags("exact");
    r = one / three;
    flags("inexact");
    r = one / zero;
    flags("divzero");
    r = zero / zero;
    flags("invalid");
    r = big * big;
    flags("overflow");
    r = tiny * tiny;
    flags("underflow");
    r = sqrt(-one);
    flags("sqrt(-1)");
    volatile float fr = fbig * fbig;
    flags("f-overflow");
    volatile long l = (long)(big);
    flags("cvt-range");
    (void)r;
    (void)fr;
    (void)l;
    return 0;
}
