#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "fncode.h"

/* Code written at run time: a function returning a constant, rewritten in
   place (made visible with __builtin___clear_cache, as a JIT must), then
   unmapped and mapped anew at the same address with other code. Code in
   a page without PROT_EXEC faults (SEGV_ACCERR at the code's address),
   runs once mprotect adds PROT_EXEC, and faults again once it is taken
   away (no decoded instruction outlives the permission). */
static sigjmp_buf jb;
static volatile int segv_code;
static void *volatile segv_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    segv_code = si->si_code;
    segv_addr = si->si_addr;
    siglongjmp(jb, sig);
}

static void run_guarded(const char *what, unsigned char *code) {
    segv_addr = 0;
    if (sigsetjmp(jb, 1) == 0)
        printf("%s: ran %d\n", what, ((fn_t)code)());
    else
        printf("%s: SIGSEGV %s at the code %d\n", what, segv_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
               segv_addr == (void *)code);
}

static void execute_permission(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    unsigned char *nx = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    emit(nx, 5);
    run_guarded("without PROT_EXEC", nx);
    mprotect(nx, 4096, PROT_READ | PROT_EXEC);
    run_guarded("after mprotect PROT_EXEC", nx);
    mprotect(nx, 4096, PROT_READ);
    run_guarded("after mprotect PROT_READ", nx);
    munmap(nx, 4096);
    sa.sa_handler = SIG_DFL;
    sa.sa_flags = 0;
    sigaction(SIGSEGV, &sa, 0);
}

int main(void) {
    const int prot = PROT_READ | PROT_WRITE | PROT_EXEC;
    unsigned char *p = mmap(0, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    emit(p, 42);
    printf("first %d\n", ((fn_t)p)());
    int sum = 0;
    for (int i = 0; i < 1000; i++) sum += ((fn_t)p)();
    emit(p, 7);
    printf("rewritten %d (sum %d)\n", ((fn_t)p)(), sum);
    if (munmap(p, 4096)) return 3;
    unsigned char *q = mmap(p, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (q != p) return 4;
    emit(q, 9);
    printf("remapped %d\n", ((fn_t)q)());
    execute_permission();
    /* Read-only code still runs; unmapped code faults. */
    mprotect(q, 4096, PROT_READ | PROT_EXEC);
    printf("read-only %d\n", ((fn_t)q)());
    fflush(stdout);
    munmap(q, 4096);
    return ((fn_t)q)();
}
