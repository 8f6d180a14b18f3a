#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

/* AMOMIN/AMOMAX have no C11 spelling: the RISC-V build uses the
   instructions, the native reference a compare-exchange loop. */
#ifdef __riscv
static int32_t amo_min_w(int32_t *p, int32_t v) {
    int32_t old;
    __asm__ volatile("amomin.w.aqrl %0, %2, (%1)" : "=r"(old) : "r"(p), "r"(v) : "memory");
    return old;
}
static int64_t amo_max_d(int64_t *p, int64_t v) {
    int64_t old;
    __asm__ volatile("amomax.d.aqrl %0, %2, (%1)" : "=r"(old) : "r"(p), "r"(v) : "memory");
    return old;
}
static uint32_t amo_maxu_w(uint32_t *p, uint32_t v) {
    uint32_t old;
    __asm__ volatile("amomaxu.w.aqrl %0, %2, (%1)" : "=r"(old) : "r"(p), "r"(v) : "memory");
    return old;
}
#else
static int32_t amo_min_w(int32_t *p, int32_t v) {
    int32_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(p, &old, old < v ? old : v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
static int64_t amo_max_d(int64_t *p, int64_t v) {
    int64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(p, &old, old > v ? old : v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
static uint32_t amo_maxu_w(uint32_t *p, uint32_t v) {
    uint32_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(p, &old, old > v ? old : v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
#endif

_Atomic int ai = 5;
_Atomic long al = 100;
_Atomic unsigned int au = 0xf0f0f0f0u;

int main(void) {
    /* Each old value is taken before the new one is loaded (argument
       evaluation order is unspecified). */
    int oi = atomic_fetch_add(&ai, 10);
    printf("fetch_add %d -> %d\n", oi, atomic_load(&ai));
    long ol = atomic_fetch_sub(&al, 1000);
    printf("fetch_sub %ld -> %ld\n", ol, atomic_load(&al));
    printf("fetch_or %x ", atomic_fetch_or(&au, 0x0f));
    printf("fetch_and %x ", atomic_fetch_and(&au, 0xff00ff00u));
    unsigned ou = atomic_fetch_xor(&au, 0xffffffffu);
    printf("fetch_xor %x -> %x\n", ou, atomic_load(&au));
    oi = atomic_exchange(&ai, -7);
    printf("exchange %d -> %d\n", oi, atomic_load(&ai));
    int expected = -7;
    int ok = atomic_compare_exchange_strong(&ai, &expected, 42);
    printf("cas ok=%d now %d\n", ok, atomic_load(&ai));
    expected = 0;
    ok = atomic_compare_exchange_strong(&ai, &expected, 1);
    printf("cas ok=%d expected=%d\n", ok, expected);
    long e = -900;
    while (!atomic_compare_exchange_weak(&al, &e, e * 2)) {}
    printf("weak cas %ld\n", atomic_load(&al));
    int32_t m = 10;
    int64_t mx = -5;
    uint32_t um = 10;
    int32_t old_m = amo_min_w(&m, -3);
    int64_t old_mx = amo_max_d(&mx, 77);
    uint32_t old_um = amo_maxu_w(&um, 0xffffffffu);
    printf("min %d (was %d) max %ld (was %ld) umax %u (was %u)\n", m, old_m, (long)mx, (long)old_mx, um, old_um);
    long counter = 0;
    for (int i = 0; i < 100000; i++) __atomic_add_fetch(&counter, 3, __ATOMIC_RELAXED);
    printf("counter %ld\n", counter);
    atomic_thread_fence(memory_order_seq_cst);
    return 0;
}
