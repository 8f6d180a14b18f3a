/* File calls over host files: open/read/write/pread/pwrite/lseek/close,
 * fstat/stat/statx, dup/dup2/dup3 (shared offsets), fcntl, pipes between
 * processes (EOF when every writer closes), getcwd, unlinkat, ftruncate,
 * memfd_create, stdio on a file, and error answers. The working directory
 * is a scratch directory given as argv[1]. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EBADF: return "EBADF";
    case EISDIR: return "EISDIR";
    case ESPIPE: return "ESPIPE";
    case ENOTDIR: return "ENOTDIR";
    case EINVAL: return "EINVAL";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ENODEV: return "ENODEV";
    default: return strerror(e);
    }
}

#define CHECK(what, expr)                                                                                              \
    do {                                                                                                               \
        errno = 0;                                                                                                     \
        long r_ = (long)(expr);                                                                                        \
        printf("%s: %ld%s%s\n", what, r_, r_ < 0 ? " " : "", r_ < 0 ? err(errno) : "");                                \
    } while (0)

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    CHECK("chdir missing", chdir("/nonexistent-dir"));
    CHECK("chdir", chdir(argv[1]));
    char cwd[4096];
    printf("getcwd ends with the scratch dir: %d\n",
           getcwd(cwd, sizeof cwd) != NULL && strstr(cwd, "rv-files") != NULL);
    CHECK("getcwd too small", getcwd(cwd, 2) == NULL ? -1 : 0);

    unlink("data.txt");
    int fd = open("data.txt", O_CREAT | O_EXCL | O_RDWR, 0644);
    printf("open new: %d\n", fd >= 3);
    CHECK("open O_EXCL again", open("data.txt", O_CREAT | O_EXCL | O_RDWR, 0644));
    CHECK("write", write(fd, "hello, world\n", 13));
    CHECK("lseek cur", lseek(fd, 0, SEEK_CUR));
    CHECK("lseek set", lseek(fd, 7, SEEK_SET));
    char buf[64] = {0};
    CHECK("read", read(fd, buf, 5));
    printf("read got [%s]\n", buf);
    CHECK("pwrite", pwrite(fd, "HELLO", 5, 0));
    memset(buf, 0, sizeof buf);
    CHECK("pread", pread(fd, buf, 13, 0));
    printf("pread got [%.12s]\n", buf);
    CHECK("offset unchanged by pread/pwrite", lseek(fd, 0, SEEK_CUR));
    CHECK("lseek end", lseek(fd, 0, SEEK_END));
    CHECK("lseek bad whence", lseek(fd, 0, 42));

    struct stat st;
    CHECK("fstat", fstat(fd, &st));
    printf("size %ld regular %d mode %o\n", (long)st.st_size, S_ISREG(st.st_mode), st.st_mode & 0777);
    CHECK("stat", stat("data.txt", &st));
    printf("stat size %ld\n", (long)st.st_size);
    CHECK("stat missing", stat("missing.txt", &st));
    struct statx sx;
    CHECK("statx", statx(AT_FDCWD, "data.txt", 0, STATX_SIZE | STATX_MODE, &sx));
    printf("statx size %llu regular %d\n", (unsigned long long)sx.stx_size, S_ISREG(sx.stx_mode));
    CHECK("stat dir", stat(".", &st));
    printf("dir %d\n", S_ISDIR(st.st_mode));

    /* dup shares the offset; dup3 with O_CLOEXEC; fcntl. */
    int d = dup(fd);
    lseek(fd, 2, SEEK_SET);
    CHECK("dup shares offset", lseek(d, 0, SEEK_CUR));
    CHECK("dup3 to 20", dup3(fd, 20, O_CLOEXEC));
    CHECK("FD_CLOEXEC on 20", fcntl(20, F_GETFD));
    CHECK("FD_CLOEXEC on dup", fcntl(d, F_GETFD));
    CHECK("dup3 same fd", dup3(fd, fd, 0));
    CHECK("dup2 same fd", dup2(fd, fd));
    CHECK("F_DUPFD from 30", fcntl(fd, F_DUPFD, 30));
    CHECK("F_GETFL access mode", fcntl(fd, F_GETFL) & O_ACCMODE);
    CHECK("close 20", close(20));
    CHECK("close 20 again", close(20));
    CHECK("read bad fd", read(99, buf, 1));
    CHECK("ftruncate", ftruncate(fd, 5));
    fstat(d, &st);
    printf("after ftruncate size %ld\n", (long)st.st_size);
    close(d);
    close(fd);
    close(30);

    /* stdio over a file. */
    FILE *f = fopen("lines.txt", "w");
    for (int i = 0; i < 100; i++)
        fprintf(f, "line %d\n", i);
    fclose(f);
    f = fopen("lines.txt", "r");
    long sum = 0;
    int n;
    while (fscanf(f, "line %d\n", &n) == 1)
        sum += n;
    fclose(f);
    printf("sum of lines %ld\n", sum);

    /* Directories. */
    rmdir("sub");
    CHECK("mkdir", mkdir("sub", 0755));
    CHECK("mkdir again", mkdir("sub", 0755));
    int dfd = open("sub", O_RDONLY | O_DIRECTORY);
    CHECK("openat in dir", openat(dfd, "inner", O_CREAT | O_WRONLY, 0600) >= 0);
    CHECK("rmdir non-empty", rmdir("sub"));
    CHECK("unlinkat inner", unlinkat(dfd, "inner", 0));
    CHECK("open dir for writing", open("sub", O_WRONLY));
    CHECK("O_DIRECTORY on a file", open("lines.txt", O_RDONLY | O_DIRECTORY));
    close(dfd);
    CHECK("unlinkat dir", unlinkat(AT_FDCWD, "sub", AT_REMOVEDIR));
    CHECK("unlink", unlink("lines.txt"));
    CHECK("unlink missing", unlink("lines.txt"));

    /* A pipe between processes: EOF once every writer is closed. */
    int p[2];
    CHECK("pipe2", pipe2(p, O_CLOEXEC));
    CHECK("lseek on a pipe", lseek(p[0], 0, SEEK_CUR));
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        for (int i = 0; i < 1000; i++)
            dprintf(p[1], "%d,", i);
        _exit(0);
    }
    close(p[1]);
    long total = 0, bytes = 0;
    char chunk[512];
    ssize_t k;
    int v = 0;
    while ((k = read(p[0], chunk, sizeof chunk)) > 0) {
        bytes += k;
        for (ssize_t i = 0; i < k; i++) {
            if (chunk[i] == ',') {
                total += v;
                v = 0;
            } else {
                v = v * 10 + (chunk[i] - '0');
            }
        }
    }
    close(p[0]);
    int status;
    waitpid(c, &status, 0);
    printf("pipe: %ld bytes, sum %ld, last read %ld\n", bytes, total, (long)k);

    /* memfd. */
    int m = memfd_create("scratch", MFD_CLOEXEC);
    CHECK("memfd write", write(m, "in memory", 9));
    CHECK("memfd size", lseek(m, 0, SEEK_END));
    memset(buf, 0, sizeof buf);
    CHECK("memfd pread", pread(m, buf, 9, 3));
    printf("memfd got [%s]\n", buf);
    close(m);

    CHECK("unlink data", unlink("data.txt"));
    return 0;
}
