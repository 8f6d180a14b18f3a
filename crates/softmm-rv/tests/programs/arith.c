#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* Values come through volatile so the compiler cannot fold them. */
volatile long vl[] = {0, 1, -1, 7, -7, LONG_MAX, LONG_MIN, 1000000007};
volatile int vi[] = {0, 1, -1, 13, -13, INT_MAX, INT_MIN};
volatile double vd[] = {0.0, -0.0, 1.0, -2.5, 3.141592653589793, 1e300, 1e-300, 2.5e-320};
/* NaN's sign is not portable (x86 makes -nan, RISC-V the canonical +nan):
   print every NaN the same way. */
static double shown(double x) { return isnan(x) ? NAN : x; }

volatile float vf[] = {0.0f, 1.5f, -3.25f, 1e30f, 1e-40f, 0.1f};

int main(void) {
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            long a = vl[i], b = vl[j];
            /* RISC-V division never traps: x/0 = -1, x%0 = x, MIN/-1 = MIN; the
               program prints those only where C defines them. */
            long q = (b != 0 && !(a == LONG_MIN && b == -1)) ? a / b : 0;
            long r = (b != 0 && !(a == LONG_MIN && b == -1)) ? a % b : 0;
            unsigned long uq = b ? (unsigned long)a / (unsigned long)b : 0;
            printf("%ld %ld: + %ld * %ld / %ld %% %ld u/ %lu hi %lld\n", a, b, (long)((unsigned long)a + (unsigned long)b),
                   (long)((unsigned long)a * (unsigned long)b), q, r, uq,
                   (long long)(((__int128)a * b) >> 64));
        }
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 7; j++) {
            int a = vi[i], b = vi[j];
            int q = (b != 0 && !(a == INT_MIN && b == -1)) ? a / b : 0;
            printf("i %d %d: %d %d %u %d\n", a, b, (int)((unsigned)a * (unsigned)b), q, b ? (unsigned)a % (unsigned)b : 0u,
                   a >> (j & 31));
        }
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            double a = vd[i], b = vd[j];
            printf("d %.17g %.17g: %.17g %.17g %.17g %.17g %d %d\n", a, b, shown(a + b), shown(a - b), shown(a * b),
                   shown(a / b), a < b, a == b);
        }
    for (int i = 0; i < 8; i++) {
        double a = vd[i];
        printf("sqrt %.17g = %.17g, fma %.17g, floor %.17g, long %ld, float %.9g\n", a, sqrt(fabs(a)),
               fma(a, 3.0, -1.0), floor(a), (a < 9e18 && a > -9e18) ? (long)a : 0L, (float)a);
    }
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            float a = vf[i], b = vf[j];
            printf("f %.9g %.9g: %.9g %.9g %.9g %.9g %a\n", a, b, shown(a + b), shown(a - b), shown(a * b), shown(a / b),
                   shown(a * b));
        }
    printf("%e %g %f %.3f %10.4f|%-10.2e|\n", 12345.678, 0.0001234, -1.0 / 3.0, 2.0 / 3.0, M_PI, 6.02e23);
    printf("inf %f nan %f -inf %g isnan %d\n", 1.0 / vd[0], shown(vd[0] / vd[0]), -1.0 / vd[0], isnan(vd[0] / vd[0]));
    printf("%.20f %.0f %a\n", 0.1, 1e22, 1.0 / 3.0);
    printf("lround %ld %ld rint %.1f %.1f\n", lround(2.5), lround(-2.5), rint(2.5), rint(3.5));
    printf("max %ld %lu %d min %ld\n", LONG_MAX, ULONG_MAX, INT_MAX, LONG_MIN);
    return 0;
}
