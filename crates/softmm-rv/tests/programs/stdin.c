#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Reads standard input to the end: echoes it upper-cased, then counts.
   First a read into a bad buffer: EFAULT, and the input is still there. */
int main(void) {
    long r = read(0, NULL, 4);
    printf("bad buffer: %ld %s\n", r, r < 0 ? strerrorname_np(errno) : "");
    char line[128];
    long lines = 0, bytes = 0;
    while (fgets(line, sizeof line, stdin)) {
        for (char *p = line; *p; p++, bytes++) *p = (char)toupper((unsigned char)*p);
        fputs(line, stdout);
        lines++;
    }
    printf("%ld lines, %ld bytes, eof %d\n", lines, bytes, feof(stdin) != 0);
    return 0;
}
