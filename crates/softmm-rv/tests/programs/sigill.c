#include <stdio.h>
#include <string.h>

/* An illegal instruction (SIGILL, status 132), or with the argument
   "trap" a breakpoint (SIGTRAP, status 133). */
int main(int argc, char **argv) {
    printf("before\n");
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "trap") == 0) {
#ifdef __riscv
        __asm__ volatile("ebreak");
#else
        __asm__ volatile("int3");
#endif
    } else {
#ifdef __riscv
        __asm__ volatile(".4byte 0xffffffff");
#else
        __asm__ volatile("ud2");
#endif
    }
    printf("not reached\n");
    return 0;
}
