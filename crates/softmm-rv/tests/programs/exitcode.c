#include <stdio.h>
#include <stdlib.h>

/* Output through stdio, then a non-zero status through exit(). */
int main(int argc, char **argv) {
    printf("exiting with %d\n", 3 + argc);
    exit(3 + argc);
}
