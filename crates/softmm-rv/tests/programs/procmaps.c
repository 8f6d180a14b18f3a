/* /proc/self/maps, smaps and pagemap as Linux writes them: a region's
 * lines, its smaps figures and flags through mlock, munlock and madvise,
 * the heap, stack and shared anonymous names, pagemap's present bits.
 * Addresses are printed relative to the region and inode numbers of
 * shared memory left out, so the output is the same natively and under
 * softmm-rv; so are the VmFlags mnemonics kernels after 6.1 or with
 * soft-dirty add (`lf`, `sd`), which riscv64 Linux 6.1 does not print. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned long base;

/* The maps lines of [lo, hi), relative to base. */
static void maps(unsigned long lo, unsigned long hi) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    if (!f) {
        printf("no maps\n");
        return;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e, off, ino;
        char perms[8], dev[16];
        int name = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &s, &e, perms, &off, dev, &ino, &name) < 6)
            continue;
        if (s < lo || e > hi)
            continue;
        char *n = line + name;
        n[strcspn(n, "\n")] = 0;
        /* The name starts at column 73, as Linux pads it. */
        printf("  +%lx-+%lx %s %lx %s %s [%s] col=%d\n", s - base, e - base, perms, off, dev,
               ino ? "ino" : "0", n, *n ? (int)(n - line) : 0);
    }
    fclose(f);
}

/* Some smaps fields of the VMA holding addr. */
static void smaps(unsigned long addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    if (!f) {
        printf("no smaps\n");
        return;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = s <= addr && addr < e;
            if (in)
                printf("  vma +%lx-+%lx\n", s - base, e - base);
            continue;
        }
        if (!in)
            continue;
        if (!strncmp(line, "VmFlags:", 8)) {
            printf("  VmFlags:");
            for (char *t = strtok(line + 8, " \n"); t; t = strtok(0, " \n"))
                if (strcmp(t, "lf") && strcmp(t, "sd"))
                    printf(" %s", t);
            printf("\n");
            continue;
        }
        const char *keep[] = {"Size:", "Rss:", "Pss:", "Private_Dirty:", "Anonymous:", "Locked:", "VmFlags:"};
        for (unsigned i = 0; i < sizeof keep / sizeof *keep; i++)
            if (!strncmp(line, keep[i], strlen(keep[i])))
                printf("  %s", line);
    }
    fclose(f);
}

static void pagemap(unsigned long addr, int pages) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    printf("  present:");
    for (int i = 0; i < pages; i++) {
        uint64_t e = 0;
        if (pread(fd, &e, 8, (addr / 4096 + i) * 8) != 8)
            printf(" ?");
        else
            printf(" %d", (int)(e >> 63));
    }
    printf("\n");
    uint64_t e;
    printf("  unaligned pread: %zd\n", pread(fd, &e, 8, 3));
    close(fd);
}

static int has_name(const char *name) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, name))
            found = 1;
    fclose(f);
    return found;
}

int main(void) {
    char *p = mmap(0, 8 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base = (unsigned long)p;
    /* Three pages of a private region with guards around it. */
    mmap(p + 4096, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    char *r = p + 4096;
    printf("fresh\n");
    maps(base, base + 8 * 4096);
    smaps((unsigned long)r);
    pagemap((unsigned long)r, 3);
    r[0] = 1;
    (void)*(volatile char *)(r + 4096);
    printf("one page written, one read\n");
    smaps((unsigned long)r);
    pagemap((unsigned long)r, 3);
    printf("mlock of the middle page: %d\n", mlock(r + 4096, 4096));
    maps(base, base + 8 * 4096);
    smaps((unsigned long)r + 4096);
    printf("mlock2 onfault of all: %ld\n", syscall(SYS_mlock2, r, 3 * 4096, 1));
    smaps((unsigned long)r);
    printf("munlock: %d\n", munlock(r, 3 * 4096));
    maps(base, base + 8 * 4096);
    printf("dontfork, wipeonfork: %d %d\n", madvise(r, 4096, MADV_DONTFORK), madvise(r + 8192, 4096, MADV_WIPEONFORK));
    smaps((unsigned long)r);
    smaps((unsigned long)r + 8192);
    mprotect(r + 4096, 4096, PROT_WRITE);
    printf("write-only\n");
    smaps((unsigned long)r + 4096);
    char *s = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    base = (unsigned long)s;
    s[0] = 1;
    printf("shared anonymous\n");
    maps(base, base + 2 * 4096);
    smaps(base);
    sbrk(4 * 4096);
    printf("heap named: %d, stack named: %d\n", has_name("[heap]"), has_name("[stack]"));
    int w = open("/proc/self/maps", O_RDWR);
    printf("write open as root: %d, write: %zd\n", w >= 0, w >= 0 ? write(w, "x", 1) : -2);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", getpid());
    int fd = open(path, O_RDONLY);
    char buf[16];
    printf("by pid: %d\n", fd >= 0 && read(fd, buf, sizeof buf) == sizeof buf);
    return 0;
}
