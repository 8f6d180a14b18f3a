/* Code written at run time, shared by the programs that run it
   (coherence.c, jit.c, mremap.c). */
#ifndef FNCODE_H
#define FNCODE_H
#include <string.h>

typedef int (*fn_t)(void);

/* The machine code of a function returning `value`, into `p`, with no
   flush: each caller chooses how its hart learns of the new code. */
static inline void put_code(unsigned char *p, int value) {
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
}

/* `put_code`, then made visible to instruction fetch as a JIT must. */
static inline void emit(unsigned char *p, int value) {
    put_code(p, value);
    __builtin___clear_cache((char *)p, (char *)p + 16);
}

#endif
