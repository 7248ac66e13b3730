/* injection.h -- failure-injection sweeps (testing builds only).
 *
 * A sweep runs a scenario once per injection point n = 0, 1, 2, ...: the
 * (n+1)th internal allocation fails (stm_test_fail_allocations).  Each run
 * happens in a forked child, so that a crash or a fatal error at one point
 * neither hides the others nor poisons the runner.  The child reports on
 * a pipe (ts_child_say, TS_CHILD_CHECK, and the fatal handler it gets)
 * and exits with 0 (no allocation failed), TS_CHILD_ENOMEM (a failure was
 * reported cleanly and the state checked) or anything else (a bug). */
#ifndef TS_INJECTION_H
#define TS_INJECTION_H

#include "test_support.h"

#define TS_CHILD_ENOMEM 10

/* In a child: appends to the report the parent prints. */
__attribute__((format(printf, 1, 2))) void ts_child_say(const char *fmt, ...);
/* The children's fatal handler: reports the message, exits with 3. */
void ts_child_fatal(const char *msg);

#define TS_CHILD_CHECK(cond, ...)                                              \
    do {                                                                       \
        if (!(cond)) {                                                         \
            ts_child_say("line %d: %s: ", __LINE__, #cond);                    \
            ts_child_say(__VA_ARGS__);                                         \
            _exit(4);                                                          \
        }                                                                      \
    } while (0)

/* Runs body(n) in a child for n = 0, 1, ... until `quiet` consecutive
 * points saw no failure at all (the scenario ran past its last
 * allocation), or max_n; fails the test if a point did not end cleanly, if
 * it never went quiet, or if no point reported a failure.  `what` names
 * the scenario in the messages. */
void ts_injection_sweep(void (*body)(long), long max_n, long quiet, const char *what);

#endif
