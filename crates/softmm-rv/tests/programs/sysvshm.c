/* System V shared memory: shmget's key rules, shmat (placement, flags,
 * read-only), IPC_STAT's figures (size, mode, creator, attach count
 * across fork), a shared futex on a segment between two processes,
 * shmdt, IPC_RMID of an attached segment, the maps line of an attach. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY 0x50f7aa01

static pid_t creator;

static void stat_of(int id, const char *when) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds)) {
        printf("%s: IPC_STAT errno %d\n", when, errno);
        return;
    }
    printf("%s: size %zu mode %o nattch %lu creator %d key %s\n", when, (size_t)ds.shm_segsz,
           (unsigned)ds.shm_perm.mode & 07777, (unsigned long)ds.shm_nattch, ds.shm_cpid == creator,
           ds.shm_perm.__key == KEY ? "KEY" : ds.shm_perm.__key == 0 ? "private" : "other");
}

/* A call's result and, when it failed, its errno. */
#define SHOW(what, call)                                                                                   \
    do {                                                                                                   \
        long r_ = (long)(call);                                                                            \
        printf("%s: %ld errno %d\n", what, r_ == -1 ? -1L : 0L, r_ == -1 ? errno : 0);                      \
    } while (0)

static long futex(unsigned *uaddr, int op, unsigned val) {
    return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

int main(void) {
    creator = getpid();
    int old = shmget(KEY, 0, 0);
    if (old >= 0)
        shmctl(old, IPC_RMID, NULL);
    SHOW("absent key", shmget(KEY, 100, 0));
    SHOW("size 0", shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600));
    int id = shmget(KEY, 10000, IPC_CREAT | IPC_EXCL | 0640);
    printf("created: %d\n", id >= 0);
    SHOW("again excl", shmget(KEY, 100, IPC_CREAT | IPC_EXCL | 0600));
    printf("again: %d\n", shmget(KEY, 0, 0) == id);
    SHOW("bigger", shmget(KEY, 20000, 0));
    stat_of(id, "fresh");
    unsigned *p = shmat(id, NULL, 0);
    printf("attached: %d aligned: %d\n", p != (void *)-1, ((unsigned long)p & 4095) == 0);
    stat_of(id, "attached");
    p[0] = 0;
    p[1] = 7;

    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        sscanf(line, "%lx-%lx", &s, &e);
        if (s == (unsigned long)p)
            printf("maps: %lu pages %.4s %s", (e - s) / 4096, strchr(line, ' ') + 1, strstr(line, "/SYSV"));
    }
    fclose(f);

    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        /* Inherited attach: same pages; wait on a shared futex there. */
        stat_of(id, "child");
        fflush(stdout);
        p[1] = 42;
        while (__atomic_load_n(&p[0], __ATOMIC_SEQ_CST) == 0)
            futex(&p[0], FUTEX_WAIT, 0);
        printf("child woken, sees %u\n", p[2]);
        fflush(stdout);
        _exit(0);
    }
    while (__atomic_load_n(&p[1], __ATOMIC_SEQ_CST) != 42)
        usleep(1000);
    p[2] = 99;
    __atomic_store_n(&p[0], 1, __ATOMIC_SEQ_CST);
    futex(&p[0], FUTEX_WAKE, 1);
    int st;
    waitpid(child, &st, 0);
    printf("child exit %d\n", WEXITSTATUS(st));
    stat_of(id, "after child");

    char *fixed = mmap(NULL, 16 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(fixed, 16 * 4096);
    SHOW("unaligned", shmat(id, fixed + 1, 0));
    unsigned *q = shmat(id, fixed + 1, SHM_RND | SHM_RDONLY);
    printf("rounded read-only at: %d\n", (char *)q == fixed);
    if (q != (void *)-1)
        printf("it sees %u\n", q[1]);
    SHOW("over it again", shmat(id, fixed, 0));
    stat_of(id, "two attaches");
    SHOW("detach inside", shmdt(fixed + 4096));
    SHOW("detach", shmdt(fixed));
    SHOW("detach again", shmdt(fixed));

    SHOW("remove attached", shmctl(id, IPC_RMID, NULL));
    SHOW("by key now", shmget(KEY, 0, 0));
    stat_of(id, "removed");
    printf("still there: %u\n", p[1]);
    SHOW("last detach", shmdt(p));
    stat_of(id, "gone");
    return 0;
}
