#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* The system calls' answers that do not depend on the machine: errors for
   bad arguments, brk and mmap semantics, identities. Standard input is
   empty. (Not compared with qemu-user, which maps MAP_FIXED_NOREPLACE over
   an existing mapping elsewhere instead of failing with EEXIST.) */
static void show(const char *what, long r) {
    if (r == -1)
        printf("%-28s -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%-28s ok\n", what);
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

int main(void) {
    char buf[16] = "x";
    show("write(1, NULL, 5)", syscall(SYS_write, 1, 0, 5));
    show("write(9, buf, 1)", syscall(SYS_write, 9, buf, 1));
    show("write(1, buf, 0)", syscall(SYS_write, 1, buf, 0));
    show("read(0, NULL, 5) at EOF", syscall(SYS_read, 0, 0, 5));
    show("read(7, buf, 1)", syscall(SYS_read, 7, buf, 1));

    long b0 = syscall(SYS_brk, 0);
    long b1 = syscall(SYS_brk, b0 + 100000);
    long b2 = syscall(SYS_brk, 0);
    printf("brk grows %d, brk(0) after %d\n", b1 == b0 + 100000, b2 == b1);
    memset((char *)b0, 1, 100000);
    long b3 = syscall(SYS_brk, b0 + 10);
    printf("brk shrinks %d\n", b3 == b0 + 10);
    long b4 = syscall(SYS_brk, 4096);
    printf("brk below start keeps %d\n", b4 == b3);

    show("mmap(len 0)", (long)mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -1 ? -1 : 0);
    show("mmap(no private/shared)", (long)mmap(0, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0) == -1 ? -1 : 0);
    char *p = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("mmap(3 pages)", p == MAP_FAILED ? -1 : 0);
    printf("page aligned %d, zero %d\n", ((long)p & 4095) == 0, p[5000] == 0);
    void *q = mmap(p, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    show("mmap(FIXED_NOREPLACE over)", q == MAP_FAILED ? -1 : 0);
    show("munmap(unaligned)", munmap(p + 1, 4096));
    show("munmap(middle page)", munmap(p + 4096, 4096));
    show("mprotect(hole)", mprotect(p, 3 * 4096, PROT_READ));
    show("mprotect(first page)", mprotect(p, 4096, PROT_READ));
    show("mprotect(bad prot)", mprotect(p, 4096, 0x100));
    q = mmap(p + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("MAP_FIXED in the hole %d\n", q == p + 4096);
    show("madvise(DONTNEED)", madvise(p + 8192, 4096, MADV_DONTNEED));
    show("mlock", mlock(p + 1, 3 * 4096 - 1));
    show("munlock", munlock(p, 3 * 4096));
    show("mlock2(ONFAULT)", mlock2(p, 4096, MLOCK_ONFAULT));
    show("mlock2(bad flag)", mlock2(p, 4096, 8));
    char *r = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(r + 4096, 4096);
    show("mlock(over a hole)", mlock(r, 2 * 4096));
    show("mlockall(CURRENT)", mlockall(MCL_CURRENT));
    show("munlockall", munlockall());
    show("mlockall(0)", mlockall(0));
    show("mlockall(ONFAULT alone)", mlockall(MCL_ONFAULT));
    munmap(r, 4096);
    int *shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared[3] = 77;
    printf("shared anon %d\n", shared[3]);

    struct utsname u;
    show("uname", uname(&u));
    printf("sysname %s\n", u.sysname);
    printf("pid is tid %d\n", getpid() == gettid());
    struct timespec t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    printf("monotonic %d\n", t2.tv_sec > t1.tv_sec || (t2.tv_sec == t1.tv_sec && t2.tv_nsec >= t1.tv_nsec));
    show("clock_gettime(bad clock)", syscall(SYS_clock_gettime, 1000, &t1));
    printf("getrandom %ld\n", syscall(SYS_getrandom, buf, 16, 0));
    show("ioctl(1, TCGETS)", syscall(SYS_ioctl, 1, 0x5401, buf));
    show("rt_sigaction(SIGKILL)", syscall(SYS_rt_sigaction, 9, buf, 0, 8));
    show("rt_sigaction(bad size)", syscall(SYS_rt_sigaction, 10, 0, 0, 4));
    show("rt_sigprocmask(bad how)", syscall(SYS_rt_sigprocmask, 7, buf, 0, 8));
    show("futex(WAKE)", syscall(SYS_futex, &shared[3], 1, 1, 0, 0, 0));
    show("futex(WAIT, wrong value)", syscall(SYS_futex, &shared[3], 0, 5, 0, 0, 0));
    struct timespec short_wait = {0, 1000000};
    show("futex(WAIT, timeout)", syscall(SYS_futex, &shared[3], 0, 77, &short_wait, 0, 0));
    show("futex(WAIT, NULL addr)", syscall(SYS_futex, 0, 0, 0, 0, 0, 0));
    show("nanosleep(bad nsec)", syscall(SYS_nanosleep, &(struct timespec){0, 2000000000L}, 0));
    /* glibc registered this thread's robust list at start-up. */
    void *head = 0;
    size_t hlen = 0;
    show("get_robust_list(self)", syscall(SYS_get_robust_list, 0, &head, &hlen));
    printf("robust head set %d len %zu\n", head != 0, hlen);
    show("get_robust_list(no such)", syscall(SYS_get_robust_list, 999999, &head, &hlen));
    show("set_robust_list(bad len)", syscall(SYS_set_robust_list, head, 8));
    shared[3] = 0;
    show("futex(LOCK_PI|CLOCK_RT)", syscall(SYS_futex, &shared[3], 6 | 256, 0, 0, 0, 0));
    show("futex(UNLOCK_PI, not owner)", syscall(SYS_futex, &shared[3], 7, 0, 0, 0, 0));
    show("futex(TRYLOCK_PI)", syscall(SYS_futex, &shared[3], 8, 0, 0, 0, 0));
    printf("pi word is my tid %d\n", shared[3] == (int)syscall(SYS_gettid));
    show("futex(TRYLOCK_PI, own)", syscall(SYS_futex, &shared[3], 8, 0, 0, 0, 0));
    show("futex(LOCK_PI, own)", syscall(SYS_futex, &shared[3], 6, 0, 0, 0, 0));
    show("futex(UNLOCK_PI)", syscall(SYS_futex, &shared[3], 7, 0, 0, 0, 0));
    printf("pi word after unlock %d\n", shared[3]);
    show("futex(LOCK_PI2|CLOCK_RT)", syscall(SYS_futex, &shared[3], 13 | 256, 0, 0, 0, 0));
    show("futex(UNLOCK_PI)", syscall(SYS_futex, &shared[3], 7, 0, 0, 0, 0));
    show("msync(unaligned)", syscall(SYS_msync, (long)buf | 1, 10, 4));
    show("msync(ASYNC|SYNC)", syscall(SYS_msync, 0, 4096, 5));
    fflush(stdout);
    return 0;
}
