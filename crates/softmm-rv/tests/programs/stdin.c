#include <ctype.h>
#include <stdio.h>

/* Reads standard input to the end: echoes it upper-cased, then counts. */
int main(void) {
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
