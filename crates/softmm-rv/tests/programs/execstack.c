/* A GCC nested function whose address is taken runs through a trampoline
 * written on the stack: the linker marks the program's stack executable
 * (PT_GNU_STACK with PF_X) and the loader must map it so. */
#include <stdio.h>

__attribute__((noinline)) static int apply(int (*f)(int), int x) {
    return f(x);
}

int main(int argc, char **argv) {
    (void)argv;
    int k = 40 + argc;
    int add(int x) {
        return x + k;
    }
    printf("through a stack trampoline: %d\n", apply(add, 1));
    return 0;
}
