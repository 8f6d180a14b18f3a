#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* Code written at run time: a function returning a constant, rewritten in
   place (made visible with __builtin___clear_cache, as a JIT must), then
   unmapped and mapped anew at the same address with other code. */
typedef int (*fn_t)(void);

static void emit(unsigned char *p, int value) {
#ifdef __riscv
    /* addi a0, zero, value ; ret (jalr zero, 0(ra)) */
    unsigned int li = 0x00000513u | ((unsigned)value << 20);
    unsigned int ret = 0x00008067u;
    memcpy(p, &li, 4);
    memcpy(p + 4, &ret, 4);
#else
    /* mov eax, value ; ret */
    p[0] = 0xb8;
    memcpy(p + 1, &value, 4);
    p[5] = 0xc3;
#endif
    __builtin___clear_cache((char *)p, (char *)p + 16);
}

int main(void) {
    const int prot = PROT_READ | PROT_WRITE | PROT_EXEC;
    unsigned char *p = mmap(0, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    emit(p, 42);
    printf("first %d\n", ((fn_t)p)());
    int sum = 0;
    for (int i = 0; i < 1000; i++) sum += ((fn_t)p)();
    emit(p, 7);
    printf("rewritten %d (sum %d)\n", ((fn_t)p)(), sum);
    if (munmap(p, 4096)) return 3;
    unsigned char *q = mmap(p, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (q != p) return 4;
    emit(q, 9);
    printf("remapped %d\n", ((fn_t)q)());
    /* Read-only code still runs; unmapped code faults. */
    mprotect(q, 4096, PROT_READ | PROT_EXEC);
    printf("read-only %d\n", ((fn_t)q)());
    fflush(stdout);
    munmap(q, 4096);
    return ((fn_t)q)();
}
