#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    char buf[256];
    const char *words[] = {"pear", "apple", "fig", "banana", "cherry", "date", "elderberry", "grape"};
    strcpy(buf, "The quick brown fox");
    strcat(buf, " jumps over the lazy dog");
    printf("%s (%zu)\n", buf, strlen(buf));
    printf("strchr %s, strrchr %s, strstr %s\n", strchr(buf, 'q'), strrchr(buf, 'o'), strstr(buf, "lazy"));
    for (char *p = buf; *p; p++) *p = (char)toupper((unsigned char)*p);
    printf("%s\n", buf);
    char *tok, *save, copy[64];
    strncpy(copy, "a,b,,c,dd", sizeof copy);
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) printf("[%s]", tok);
    printf("\n");
    const char *sorted[8];
    memcpy(sorted, words, sizeof words);
    qsort(sorted, 8, sizeof sorted[0], cmp);
    for (int i = 0; i < 8; i++) printf("%s%c", sorted[i], i == 7 ? '\n' : ' ');
    char big[5000];
    memset(big, 'x', sizeof big);
    memmove(big + 1, big, 4000);
    big[4999] = 0;
    printf("memcmp %d %d %d\n", memcmp("abc", "abd", 3) < 0, memcmp("abc", "abc", 3), memcmp("b", "a", 1) > 0);
    printf("strtol %ld %ld %lu\n", strtol("-12345", NULL, 10), strtol("ff", NULL, 16), strtoul("777", NULL, 8));
    printf("atof %.6f snprintf ", atof("3.5e2"));
    int n = snprintf(buf, 10, "%d-%s", 123456, "truncated");
    printf("%s %d\n", buf, n);
    printf("strlen big %zu\n", strlen(big));
    return 0;
}
