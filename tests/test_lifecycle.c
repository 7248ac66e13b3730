/* test_lifecycle.c -- a thread exiting while attached (in and out of a
 * transaction) and fork(), with the outcomes documented in stm.h and
 * docs/DESIGN.md 11: the exiting thread's transaction is rolled back and
 * the thread detached; the child of fork() keeps using the library from
 * the forking thread and sees exactly the committed state; fork() inside
 * a transaction is fatal. */
#include "support/tx_macros.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(lifecycle, .timeout = 60);

TS_PREBUILT_NODE(g);

static int tx_set_g(void *arg)
{
    WR(&g)->value = (long)(intptr_t)arg;
    return STM_DONE;
}

static int tx_get_g(void *arg)
{
    *(long *)arg = RD(&g)->value;
    return STM_DONE;
}

static long read_g(void)
{
    long v = 0;
    ts_run(tx_get_g, &v);
    return v;
}

/* ---- thread exit ----------------------------------------------------------- */

typedef struct exit_plan {
    bool inevitable;       /* become inevitable before exiting */
    bool in_place;         /* write g in place (own protected copy) */
} exit_plan;

static int tx_write_and_exit(void *arg)
{
    exit_plan *p = arg;
    if (p->inevitable)
        stm_become_inevitable();
    WR(&g)->value = 666;
    (void)ts_new_node(7, NULL, NULL);   /* a fresh object too */
    pthread_exit(NULL);
}

static void *exiting_thread(void *arg)
{
    exit_plan *p = arg;
    if (stm_thread_attach() != STM_OK)
        return NULL;
    if (p->in_place)
        (void)stm_run(tx_set_g, (void *)(intptr_t)41);   /* g's newest copy is ours */
    (void)stm_run(tx_write_and_exit, p);
    return NULL;   /* not reached */
}

static void exit_inside_transaction(exit_plan plan)
{
    ts_register_prebuilt(&g, 40);
    stm_stats before = ts_stats();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, exiting_thread, &plan), 0);
    pthread_join(th, NULL);
    stm_stats after = ts_stats();
    /* The write is gone: g holds the last committed value. */
    cr_assert_eq(read_g(), plan.in_place ? 41 : 40);
    cr_assert_eq(DELTA(after, before, aborts_by_reason[STM_ABORT_THREAD_EXIT]), 1);
    /* Nothing is left held: the clock is even (no inevitable transaction)
     * and this thread can become inevitable and commit a shared write. */
#ifdef STM_TESTING
    cr_assert_eq(stm_test_global_time() % 2, 0);
#endif
    TX_BEGIN();
    WR(&g)->value = 42;
    TX_COMMIT();
    cr_assert_eq(read_g(), 42);
}

Test(lifecycle, exit_inside_a_transaction_rolls_it_back, .init = ts_setup, .fini = ts_teardown)
{
    exit_inside_transaction((exit_plan){ .inevitable = false });
}

Test(lifecycle, exit_inside_an_inevitable_transaction_rolls_it_back_and_releases_it,
     .init = ts_setup, .fini = ts_teardown)
{
    exit_inside_transaction((exit_plan){ .inevitable = true });
}

Test(lifecycle, exit_while_writing_in_place_restores_the_committed_state, .init = ts_setup,
     .fini = ts_teardown)
{
    exit_inside_transaction((exit_plan){ .in_place = true });
}

static void *attach_and_return(void *arg)
{
    int *rc = arg;
    *rc = stm_thread_attach();
    return NULL;   /* still attached: the destructor detaches */
}

static void setup_two_threads_max(void)
{
    ts_options o = { 0 };
    stm_set_fatal_handler(ts_fatal_handler);
    stm_config cfg;
    ts_config(&cfg, &o);
    cfg.max_threads = 2;
    cr_assert_eq(stm_init(&cfg), STM_OK);
    cr_assert_eq(stm_thread_attach(), STM_OK);
}

Test(lifecycle, a_thread_returning_attached_is_detached, .init = setup_two_threads_max,
     .fini = ts_teardown)
{
    /* With room for two threads (this one and one more), three threads in
     * a row can attach only if each exit frees its descriptor. */
    for (int i = 0; i < 3; i++) {
        int rc = -100;
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, attach_and_return, &rc), 0);
        pthread_join(th, NULL);
        cr_assert_eq(rc, STM_OK, "attach number %d returned %d", i + 1, rc);
    }
}

/* ---- fork ---------------------------------------------------------------------- */

static int tx_write_in_place_and_wait(void *arg)
{
    (void)arg;
    WR(&g)->value = 999;    /* in place: g's newest copy is this thread's */
    ls_set(2);
    ls_wait(3);             /* the main thread forks meanwhile */
    return STM_DONE;
}

static void helper(void *arg)
{
    (void)arg;
    ts_run(tx_set_g, (void *)(intptr_t)50);
    ls_set(1);
    ts_run(tx_write_in_place_and_wait, NULL);
}

static void *child_thread(void *arg)
{
    long *seen = arg;
    if (stm_thread_attach() != STM_OK)
        return NULL;
    if (stm_run(tx_get_g, seen) != STM_OK)
        *seen = -1;
    stm_thread_detach();
    return NULL;
}

static int tx_collect(void *arg)
{
    (void)arg;
    node *n = ts_new_node(1, NULL, NULL);
    stm_push_root(n);
    stm_minor_collect();
    n = stm_pop_root();
    return RD(n)->value == 1 ? STM_DONE : (stm_abort_and_retry(), STM_DONE);
}

/* In the child: 0 if everything works as documented, else a step number. */
static int child_checks(void)
{
    /* The helper thread does not exist here; its in-place write does not
     * show, its committed value does. */
    if (read_g() != 50)
        return 10;
    if (stm_run(tx_set_g, (void *)(intptr_t)60) != STM_OK || read_g() != 60)
        return 11;
    if (stm_run(tx_collect, NULL) != STM_OK)
        return 12;
    /* New threads attach (fresh descriptors) and see the child's state. */
    long seen = 0;
    pthread_t th;
    if (pthread_create(&th, NULL, child_thread, &seen) != 0)
        return 13;
    pthread_join(th, NULL);
    return seen == 60 ? 0 : 14;
}

Test(lifecycle, fork_while_another_thread_is_in_a_transaction, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g, 40);
    pthread_t th = ts_spawn(helper, NULL);
    ls_wait(2);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child_checks());
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child did not exit normally (status %#x)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "the child failed at step %d", WEXITSTATUS(status));
    /* The parent goes on: the helper commits its write. */
    ls_set(3);
    ts_join(th);
    cr_assert_eq(read_g(), 999);
}

static int tx_fork(void *arg)
{
    (void)arg;
    (void)fork();
    return STM_DONE;
}

Test(lifecycle, fork_inside_a_transaction_is_fatal, .init = ts_setup, .fini = ts_teardown)
{
    /* In a child process with the default handler: the message goes to
     * stderr (a pipe here) and the process aborts. */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fds[1], 2);
        stm_set_fatal_handler(NULL);
        (void)stm_run(tx_fork, NULL);
        _exit(0);   /* not reached */
    }
    close(fds[1]);
    char buf[512] = { 0 };
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "expected SIGABRT, status %#x", status);
    cr_assert(strstr(buf, "fork() called inside a transaction") != NULL, "stderr was: %s", buf);
}
