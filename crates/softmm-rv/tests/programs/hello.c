#include <stdio.h>

int main(int argc, char **argv) {
    printf("hello, world\n");
    printf("argc=%d argv0_nonempty=%d\n", argc, argv[0][0] != 0);
    for (int i = 1; i < argc; i++)
        printf("arg %d: %s\n", i, argv[i]);
    return 0;
}
