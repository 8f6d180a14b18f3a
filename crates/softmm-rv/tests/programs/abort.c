#include <stdio.h>
#include <stdlib.h>

/* abort(): glibc raises SIGABRT at itself (tgkill); status 134. */
int main(void) {
    printf("about to abort\n");
    fflush(stdout);
    abort();
}
