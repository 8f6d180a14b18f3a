#include <errno.h>
#include <stdio.h>
#include <unistd.h>

/* A system-call number no kernel has: ENOSYS (and, under softmm-rv, a
   line in the unknown-call report). */
int main(void) {
    long r = syscall(1000);
    printf("syscall(1000): %ld %s\n", r, errno == ENOSYS ? "ENOSYS" : "other");
    return 0;
}
