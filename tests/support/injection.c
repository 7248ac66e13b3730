/* injection.c -- see injection.h. */
#include "injection.h"

#ifdef STM_TESTING

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct child_result {
    int status;
    char msg[512];
} child_result;

static int child_pipe = -1;

void ts_child_say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && child_pipe >= 0)
        (void)!write(child_pipe, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void ts_child_fatal(const char *msg)
{
    ts_child_say("fatal error: %s", msg);
    _exit(3);
}

static child_result run_child(void (*body)(long), long n)
{
    child_result res = { 0, "" };
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork");
    if (pid == 0) {
        close(fds[0]);
        child_pipe = fds[1];
        stm_set_fatal_handler(ts_child_fatal);
        body(n);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t k;
    while (got < sizeof res.msg - 1 &&
           (k = read(fds[0], res.msg + got, sizeof res.msg - 1 - got)) > 0)
        got += (size_t)k;
    res.msg[got] = 0;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    res.status = st;
    return res;
}

static const char *describe(const child_result *r, char *buf, size_t cap)
{
    if (WIFSIGNALED(r->status))
        snprintf(buf, cap, "killed by signal %d %s", WTERMSIG(r->status), r->msg);
    else if (WEXITSTATUS(r->status) == 3)
        snprintf(buf, cap, "%s", r->msg);
    else
        snprintf(buf, cap, "exit %d %s", WEXITSTATUS(r->status), r->msg);
    return buf;
}

void ts_injection_sweep(void (*body)(long), long max_n, long quiet, const char *what)
{
    char report[4096] = "";
    int bad = 0;
    long clean_run = 0, n, enomem = 0;
    for (n = 0; n < max_n && clean_run < quiet; n++) {
        child_result r = run_child(body, n);
        if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) {
            clean_run++;
            continue;
        }
        clean_run = 0;
        if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == TS_CHILD_ENOMEM) {
            enomem++;
            continue;
        }
        bad++;
        char d[600];
        size_t len = strlen(report);
        if (len < sizeof report - 200)
            snprintf(report + len, sizeof report - len, "\n  n=%ld: %s", n,
                     describe(&r, d, sizeof d));
    }
    CHECK(bad == 0, "%s: %d of %ld injection points did not end cleanly:%s", what, bad, n,
          report);
    CHECK(clean_run >= quiet, "%s: still failing at n=%ld", what, n);
    CHECK(enomem > 0, "%s: no injection point reported a failure", what);
}

#endif
