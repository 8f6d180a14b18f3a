#include <stdio.h>

/* Writes its line (flushed), then stores through a null pointer: killed
   by SIGSEGV, status 139 in a shell. */
int main(void) {
    printf("before the fault\n");
    fflush(stdout);
    volatile int *p = (volatile int *)0;
    *p = 1;
    printf("not reached\n");
    return 0;
}
