/* execve: a chain of execs of this program (arguments and environment
 * carried over), vfork + exec, exec failures (ENOENT, EACCES, ENOEXEC)
 * seen by the caller, and fork + exec + wait. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *err(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOEXEC: return "ENOEXEC";
    case EFAULT: return "EFAULT";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    /* Line-buffered: nothing is lost when execve replaces the program. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 2 && !strcmp(argv[1], "chain")) {
        int n = atoi(argv[2]);
        const char *depth = getenv("DEPTH");
        printf("chain %d (DEPTH=%s, argc %d)\n", n, depth ? depth : "unset", argc);
        fflush(stdout);
        if (n == 0)
            return 17;
        char next[16], env[32];
        snprintf(next, sizeof next, "%d", n - 1);
        snprintf(env, sizeof env, "DEPTH=%d", n);
        char *args[] = {argv[0], "chain", next, "extra arg", NULL};
        char *envp[] = {env, "OTHER=x", NULL};
        execve(argv[0], args, envp);
        printf("execve failed: %s\n", err(errno));
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "child")) {
        printf("child argv:");
        for (int i = 2; i < argc; i++)
            printf(" [%s]", argv[i]);
        printf(" MARK=%s\n", getenv("MARK") ? getenv("MARK") : "unset");
        return 7;
    }

    char *none[] = {"x", NULL};
    errno = 0;
    execve("/nonexistent/program", none, environ);
    printf("missing: %s\n", err(errno));
    execve("/etc/passwd", none, environ);
    printf("not executable: %s\n", err(errno));
    execve("/", none, environ);
    printf("directory: %s\n", err(errno));
    execve(NULL, none, environ);
    printf("null path: %s\n", err(errno));

    setenv("MARK", "vforked", 1);
    pid_t p = vfork();
    if (p == 0) {
        char *args[] = {argv[0], "child", "a b", "", "c", NULL};
        execve(argv[0], args, environ);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    printf("vfork child: exited %d code %d\n", WIFEXITED(st), WEXITSTATUS(st));

    p = fork();
    if (p == 0) {
        char *args[] = {argv[0], "chain", "3", NULL};
        execve(argv[0], args, environ);
        _exit(127);
    }
    waitpid(p, &st, 0);
    printf("chain ended: exited %d code %d\n", WIFEXITED(st), WEXITSTATUS(st));
    fflush(stdout);

    char *args[] = {argv[0], "chain", "2", NULL};
    execve(argv[0], args, environ);
    return 1;
}
