#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

extern char **environ;

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The initial stack as Linux lays it out, checked through what every
   architecture shares: argv, envp and auxv contiguous, AT_* values. */
int main(int argc, char **argv) {
    char **envp = environ;
    int envc = 0;
    while (envp[envc]) envc++;
    printf("argc %d envc %d envp_follows_argv %d\n", argc, envc, envp == argv + argc + 1);
    Elf64_auxv_t *aux = (Elf64_auxv_t *)(envp + envc + 1);
    int n = 0, seen_null = 0;
    for (; n < 64; n++)
        if (aux[n].a_type == AT_NULL) {
            seen_null = 1;
            break;
        }
    printf("auxv terminated %d\n", seen_null);
    printf("pagesz %lu phent %lu secure %lu\n", getauxval(AT_PAGESZ), getauxval(AT_PHENT), getauxval(AT_SECURE));
    printf("uid %d euid %d gid %d egid %d\n", getauxval(AT_UID) == getuid(), getauxval(AT_EUID) == geteuid(),
           getauxval(AT_GID) == getgid(), getauxval(AT_EGID) == getegid());
    printf("random %d clktck %lu\n", getauxval(AT_RANDOM) != 0, getauxval(AT_CLKTCK));
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    printf("execfn is argv0 %d\n", execfn && strcmp(execfn, argv[0]) == 0);
    const Elf64_Phdr *ph = (const Elf64_Phdr *)getauxval(AT_PHDR);
    int loads = 0;
    for (unsigned long i = 0; i < getauxval(AT_PHNUM); i++) loads += ph[i].p_type == PT_LOAD;
    printf("phdr loads>0 %d\n", loads > 0);
    for (int i = 1; i < argc; i++) printf("argv[%d] = %s\n", i, argv[i]);
    /* Sorted: qemu-user hands the environment over in reverse order. */
    char *sorted[64];
    int n_env = envc < 64 ? envc : 64;
    for (int i = 0; i < n_env; i++) sorted[i] = envp[i];
    qsort(sorted, n_env, sizeof sorted[0], cmp);
    for (int i = 0; i < n_env; i++) printf("env %s\n", sorted[i]);
    return 0;
}
