/* test_inevitable.c -- inevitable transactions (explicit, by
 * stm_become_inevitable, and as stm_run's fallback after max_attempts),
 * atomic sections, STM_CONTINUE chunking and stm_should_break
 * (docs/DESIGN.md 3.5-3.7).
 *
 * Criterion runs a suite's fixtures as well as a test's, so this suite
 * sets none: each test names its own (some need another configuration). */
#include "support/tx_macros.h"

#include <time.h>

TestSuite(inevitable, .timeout = 60);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#else
#define KIND(p, k) ((void)(p))
#endif

TS_PREBUILT_NODE(g_x);
TS_PREBUILT_NODE(g_y);

static void setup_3_attempts(void)
{
    ts_options o = { .max_attempts = 3 };
    ts_setup_with(&o);
}

/* Gives another thread the chance to run ahead if the library let it: the
 * assertions never depend on it (a correct library passes however long the
 * pause is), it only makes a broken exclusion visible. */
static void pause_a_little(void)
{
    struct timespec ts = { 0, 30 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

/* An event log shared by the two threads. */
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char event_log[16];
static int event_count;
static void log_event(char c)
{
    pthread_mutex_lock(&log_mutex);
    if (event_count < (int)sizeof event_log - 1)
        event_log[event_count++] = c;
    pthread_mutex_unlock(&log_mutex);
}

typedef struct ictx {
    int calls, regular, inevitable;
    int attempts;
    long seen;
    node *p;
    stm_stats s0, s1;
    long long n1, n2;
} ictx;

/* ---- explicit inevitable transactions -------------------------------------- */

Test(inevitable, begin_and_commit, .init = ts_setup, .fini = ts_teardown)
{
    stm_stats before = ts_stats();
    CHECK(!stm_in_transaction(), "not in a transaction yet");
    CHECK_EQ(stm_begin_inevitable(), STM_OK);
    CHECK(stm_in_transaction(), "in a transaction");
    CHECK(stm_is_inevitable(), "inevitable");
    CHECK_EQ(stm_begin_inevitable(), STM_ESTATE);    /* already in one */
    node *n = ts_new_node(3, NULL, NULL);
    KIND(n, STM_KIND_PRIVATE);
    CHECK_EQ(stm_commit(), STM_OK);
    CHECK(!stm_in_transaction(), "committed");
    CHECK(!stm_is_inevitable(), "no longer inevitable");
    KIND(n, STM_KIND_PROTECTED);
    CHECK_EQ(stm_commit(), STM_ESTATE);              /* nothing to commit */
    stm_stats after = ts_stats();
    CHECK_EQ(DELTA(after, before, inevitable), 1);
    CHECK_EQ(DELTA(after, before, commits), 1);
}

static int tx_become(void *arg)
{
    ictx *ix = arg;
    ix->calls++;
    CHECK(!stm_is_inevitable(), "a regular transaction at first");
    stm_become_inevitable();
    CHECK(stm_is_inevitable(), "inevitable now");
    stm_become_inevitable();            /* no-op */
    CHECK(stm_is_inevitable(), "still inevitable");
    WR(&g_x)->value += 1;
    return STM_DONE;
}

Test(inevitable, become_inevitable_inside_run, .init = ts_setup, .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    ictx ix = { 0 };
    stm_stats before = ts_stats();
    ts_run(tx_become, &ix);
    stm_stats after = ts_stats();
    CHECK_EQ(ix.calls, 1);
    CHECK_EQ(DELTA(after, before, inevitable), 1);
    CHECK_EQ(DELTA(after, before, commits_shared), 1);
    CHECK(!stm_is_inevitable(), "stm_run ended the transaction");
}

static int tx_nested_in_inevitable(void *arg)
{
    ictx *ix = arg;
    ix->calls++;
    CHECK(stm_is_inevitable(), "part of the enclosing inevitable transaction");
    return ix->calls < 3 ? STM_CONTINUE : STM_DONE;
}

Test(inevitable, run_inside_explicit_inevitable_is_flat, .init = ts_setup,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    stm_stats before = ts_stats();
    CHECK_EQ(stm_begin_inevitable(), STM_OK);
    CHECK_EQ(stm_run(tx_nested_in_inevitable, &ix), STM_OK);
    CHECK(stm_in_transaction(), "stm_run did not commit the enclosing transaction");
    CHECK_EQ(stm_commit(), STM_OK);
    stm_stats after = ts_stats();
    CHECK_EQ(ix.calls, 3);
    CHECK_EQ(DELTA(after, before, commits), 1);
}

/* ---- progress: max_attempts ------------------------------------------------ */

static int tx_always_abort_unless_inevitable(void *arg)
{
    ictx *ix = arg;
    if (!stm_is_inevitable()) {
        ix->regular++;
        stm_abort_and_retry();
    }
    ix->inevitable++;
    return STM_DONE;
}

Test(inevitable, run_becomes_inevitable_after_max_attempts, .init = setup_3_attempts,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    stm_stats before = ts_stats();
    ts_run(tx_always_abort_unless_inevitable, &ix);
    stm_stats after = ts_stats();
    CHECK_EQ(ix.regular, 3);
    CHECK_EQ(ix.inevitable, 1);
    CHECK_EQ(DELTA(after, before, aborts), 3);
    CHECK_EQ(DELTA(after, before, inevitable), 1);
    CHECK_EQ(DELTA(after, before, commits), 1);
    /* The next stm_run starts over with a regular attempt. */
    ictx ix2 = { 0 };
    ts_run(tx_always_abort_unless_inevitable, &ix2);
    CHECK_EQ(ix2.regular, 3);
    CHECK_EQ(ix2.inevitable, 1);
}

Test(inevitable, default_max_attempts_is_16, .init = ts_setup, .fini = ts_teardown)
{
    ictx ix = { 0 };
    ts_run(tx_always_abort_unless_inevitable, &ix);
    CHECK_EQ(ix.regular, 16);
    CHECK_EQ(ix.inevitable, 1);
}

/* After a chunk committed, the next chunk is a fresh (regular) attempt. */
static int tx_abort_first_chunks(void *arg)
{
    ictx *ix = arg;
    ix->calls++;
    if (ix->inevitable == 0) {
        if (!stm_is_inevitable()) {
            ix->regular++;
            stm_abort_and_retry();
        }
        ix->inevitable++;
        return STM_CONTINUE;
    }
    /* Second chunk: regular again. */
    ix->seen = stm_is_inevitable();
    return STM_DONE;
}

Test(inevitable, next_chunk_after_inevitable_fallback_is_regular, .init = setup_3_attempts,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    ts_run(tx_abort_first_chunks, &ix);
    CHECK_EQ(ix.regular, 3);
    CHECK_EQ(ix.inevitable, 1);
    CHECK_EQ(ix.seen, 0);
}

/* ---- an inevitable transaction is never aborted --------------------------- */

static int tx_a_inevitable_writes_x(void *arg)
{
    ictx *ix = arg;
    ix->attempts++;
    stm_become_inevitable();
    WR(&g_x)->value += 1;
    ls_set(1);
    ls_wait(2);                     /* B has written g_x and is committing */
    pause_a_little();
    return STM_DONE;
}

static void a_inevitable(void *arg)
{
    ictx *ix = arg;
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    ts_run(tx_a_inevitable_writes_x, ix);
    CHECK_EQ(ix->attempts, 1);
}

static int tx_b_writes_x(void *arg)
{
    ictx *ix = arg;
    ix->calls++;
    WR(&g_x)->value += 10;
    if (ix->calls == 1)
        ls_set(2);
    ix->seen = RD(&g_x)->value;
    return STM_DONE;
}

static void b_conflicts(void *arg)
{
    ictx *ix = arg;
    ls_wait(1);
    ts_run(tx_b_writes_x, ix);
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK(info.reason == STM_ABORT_WRITE_CONFLICT, "B aborted with %s",
          stm_abort_reason_name(info.reason));
}

Test(inevitable, inevitable_transaction_wins_write_conflicts, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    ictx ix = { 0 };
    two_threads(a_inevitable, b_conflicts, &ix);
    CHECK_EQ(ix.calls, 2);
    CHECK_EQ(ix.seen, 11);
}

/* Becoming inevitable validates the reads once: VALIDATE_INEVITABLE. */
static int tx_read_then_become(void *arg)
{
    ictx *ix = arg;
    long x = RD(&g_x)->value;
    if (ix->attempts++ == 0) {
        ls_set(1);
        ls_wait(2);                 /* B committed g_x += 10 */
    }
    stm_become_inevitable();
    ix->seen = x;
    return STM_DONE;
}

static void a_becomes_late(void *arg)
{
    ictx *ix = arg;
    ts_run(tx_read_then_become, ix);
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK(info.reason == STM_ABORT_VALIDATE_INEVITABLE, "aborted with %s",
          stm_abort_reason_name(info.reason));
    CHECK_PTR_EQ(info.object, &g_x);
}

static int tx_b_adds_10(void *arg)
{
    (void)arg;
    WR(&g_x)->value += 10;
    return STM_DONE;
}

static void b_commits_at_1(void *arg)
{
    (void)arg;
    ls_wait(1);
    ts_run(tx_b_adds_10, NULL);
    ls_set(2);
}

Test(inevitable, becoming_inevitable_validates_reads, .init = ts_setup, .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    ictx ix = { 0 };
    two_threads(a_becomes_late, b_commits_at_1, &ix);
    CHECK_EQ(ix.attempts, 2);
    CHECK_EQ(ix.seen, 10);
}

/* ---- exclusion ---------------------------------------------------------------- */

static void a_holds_inevitable(void *arg)
{
    (void)arg;
    CHECK_EQ(stm_begin_inevitable(), STM_OK);
    ls_set(1);
    pause_a_little();
    log_event('a');                 /* still inside: B must not have got in */
    CHECK_EQ(stm_commit(), STM_OK);
}

static void b_begins_inevitable(void *arg)
{
    (void)arg;
    ls_wait(1);
    CHECK_EQ(stm_begin_inevitable(), STM_OK);     /* waits for A's commit */
    log_event('b');
    CHECK_EQ(stm_commit(), STM_OK);
}

Test(inevitable, only_one_inevitable_transaction_at_a_time, .init = ts_setup,
     .fini = ts_teardown)
{
    two_threads(a_holds_inevitable, b_begins_inevitable, NULL);
    CHECK(strcmp(event_log, "ab") == 0, "event order \"%s\", expected \"ab\"", event_log);
}

static int tx_b_writes_y(void *arg)
{
    (void)arg;
    WR(&g_y)->value = 1;
    return STM_DONE;
}

static void b_shared_commit(void *arg)
{
    (void)arg;
    ls_wait(1);
    ts_run(tx_b_writes_y, NULL);    /* a shared commit: waits for A */
    log_event('b');
}

Test(inevitable, shared_commits_wait_for_the_inevitable_transaction, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_y, 0);
    two_threads(a_holds_inevitable, b_shared_commit, NULL);
    CHECK(strcmp(event_log, "ab") == 0, "event order \"%s\", expected \"ab\"", event_log);
}

/* Read-only and private commits of other threads, and stealing from the
 * inevitable thread, go on while it runs (DESIGN 3.6): if they waited,
 * this test would deadlock (and time out). */
static node *volatile shared_raw;

static int tx_make_p(void *arg)
{
    ictx *ix = arg;
    ix->p = ts_new_node(5, NULL, NULL);
    return STM_DONE;
}

static void a_inevitable_waits_for_b(void *arg)
{
    ictx *ix = arg;
    ts_run(tx_make_p, ix);
    stm_push_root(ix->p);
    shared_raw = ix->p;
    CHECK_EQ(stm_begin_inevitable(), STM_OK);
    ls_set(1);
    ls_wait(2);                     /* B did its transactions meanwhile */
    CHECK_EQ(stm_commit(), STM_OK);
    stm_pop_root();
}

static int tx_b_read_only(void *arg)
{
    ictx *ix = arg;
    ix->seen = RD(&g_x)->value;
    return STM_DONE;
}

static int tx_b_private(void *arg)
{
    ictx *ix = arg;
    WR(ix->p)->value = 6;
    return STM_DONE;
}

static int tx_b_steals(void *arg)
{
    ictx *ix = arg;
    ix->n1 = RD(shared_raw)->value;
    return STM_DONE;
}

static void b_runs_alongside(void *arg)
{
    ictx *ix = arg;
    ls_wait(1);
    ts_run(tx_b_read_only, ix);
    ictx own = { 0 };
    ts_run(tx_make_p, &own);
    ts_run(tx_b_private, &own);
    ts_run(tx_b_steals, ix);
    CHECK_EQ(own.p->value, 6);
    ls_set(2);
}

Test(inevitable, read_only_private_commits_and_steals_do_not_wait, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 4);
    ictx ix = { 0 };
    two_threads(a_inevitable_waits_for_b, b_runs_alongside, &ix);
    CHECK_EQ(ix.seen, 4);
    CHECK_EQ(ix.n1, 5);
}

#ifdef STM_TESTING
/* A thief that steals from the inevitable transaction's thread just after
 * its commit must stamp the copy with the commit's time or later, or a
 * reader whose snapshot predates the commit would read the new state next
 * to the old one without extending.  The hook holds A right after it
 * released its collection lock, which is where the clock used to be still
 * odd (the history checker found it: an attempt that read values never
 * current together). */
static void a_pauses_after_unlock(stm_test_point p, void *arg)
{
    (void)p, (void)arg;
    ls_set(2);
    ls_wait(3);                     /* B has stolen P and finished */
}

static int tx_a_inevitable_writes_x_and_p(void *arg)
{
    ictx *ix = arg;
    stm_become_inevitable();
    WR(&g_x)->value = 1;            /* a public object: a shared commit */
    WR(ix->p)->value = 6;           /* our protected object, written in place */
    return STM_DONE;
}

static void a_commits_inevitable_then_pauses(void *arg)
{
    ictx *ix = arg;
    ts_run(tx_make_p, ix);
    stm_push_root(ix->p);
    shared_raw = ix->p;
    ls_wait(1);                     /* B read g_x at the old snapshot */
    stm_test_set_hook(STM_POINT_COMMIT_UNLOCKED, a_pauses_after_unlock, NULL);
    ts_run(tx_a_inevitable_writes_x_and_p, ix);
    stm_test_set_hook(STM_POINT_COMMIT_UNLOCKED, NULL, NULL);
    stm_pop_root();
}

static int tx_b_reads_x_then_p(void *arg)
{
    ictx *ix = arg;
    long x = RD(&g_x)->value;
    if (ix->attempts++ == 0) {
        ls_set(1);
        ls_wait(2);                 /* A committed and released its lock */
    }
    long p = RD(shared_raw)->value;    /* steals from A */
    if (x != 1 || p != 6)
        CHECK(x == 0 && p == 5, "attempt %d saw x = %ld with p = %ld", ix->attempts, x, p);
    ix->seen = x * 10 + p;
    return STM_DONE;
}

static void b_reads_across_the_commit(void *arg)
{
    ictx *ix = arg;
    ts_run(tx_b_reads_x_then_p, ix);
    ls_set(3);
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK(info.reason == STM_ABORT_VALIDATE_INFLIGHT, "B aborted with %s",
          stm_abort_reason_name(info.reason));
}

Test(inevitable, a_steal_right_after_an_inevitable_commit_is_stamped_after_it,
     .init = ts_setup, .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 0);
    ictx ix = { 0 };
    two_threads(a_commits_inevitable_then_pauses, b_reads_across_the_commit, &ix);
    CHECK_EQ(ix.attempts, 2);
    CHECK_EQ(ix.seen, 16);
}
#endif

/* ---- atomic sections ------------------------------------------------------------ */

static int tx_atomic_nesting(void *arg)
{
    (void)arg;
    CHECK_EQ(stm_atomic_depth(), 0);
    stm_atomic_begin();
    CHECK_EQ(stm_atomic_depth(), 1);
    stm_atomic_begin();
    CHECK_EQ(stm_atomic_depth(), 2);
    stm_atomic_end();
    CHECK_EQ(stm_atomic_depth(), 1);
    stm_atomic_end();
    CHECK_EQ(stm_atomic_depth(), 0);
    return STM_DONE;
}

Test(inevitable, atomic_sections_nest, .init = ts_setup, .fini = ts_teardown)
{
    CHECK_EQ(stm_atomic_depth(), 0);
    ts_run(tx_atomic_nesting, NULL);
}

/* STM_CONTINUE inside an atomic section neither commits nor starts a new
 * transaction; after the section closes it commits again. */
static int tx_continue_in_atomic(void *arg)
{
    ictx *ix = arg;
    stm_stats now = ts_stats();
    ix->calls++;
    switch (ix->calls) {
    case 1:
        ix->s0 = now;
        stm_atomic_begin();
        ix->p = ts_new_node(1, NULL, NULL);
        return STM_CONTINUE;
    case 2:
        CHECK_EQ(DELTA(now, ix->s0, commits), 0);
        CHECK_EQ(stm_atomic_depth(), 1);
        KIND(ix->p, STM_KIND_PRIVATE);          /* same transaction */
        CHECK_PTR_EQ(stm_read(ix->p), ix->p);
        stm_atomic_begin();
        return STM_CONTINUE;
    case 3:
        CHECK_EQ(DELTA(now, ix->s0, commits), 0);
        stm_atomic_end();
        return STM_CONTINUE;
    case 4:
        CHECK_EQ(DELTA(now, ix->s0, commits), 0);
        KIND(ix->p, STM_KIND_PRIVATE);
        stm_atomic_end();
        return STM_CONTINUE;        /* commits now */
    case 5:
        CHECK_EQ(DELTA(now, ix->s0, commits), 1);
        KIND(ix->p, STM_KIND_PROTECTED);
        return STM_DONE;
    }
    CHECK(false, "called %d times", ix->calls);
    return STM_DONE;
}

Test(inevitable, continue_inside_atomic_section_does_not_commit, .init = ts_setup,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    ts_run(tx_continue_in_atomic, &ix);
    stm_stats after = ts_stats();
    CHECK_EQ(ix.calls, 5);
    CHECK_EQ(DELTA(after, ix.s0, commits), 2);
}

static int tx_continue_plain(void *arg)
{
    ictx *ix = arg;
    ix->calls++;
    return ix->calls < 4 ? STM_CONTINUE : STM_DONE;
}

Test(inevitable, continue_outside_atomic_section_commits_each_chunk, .init = ts_setup,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    stm_stats before = ts_stats();
    ts_run(tx_continue_plain, &ix);
    stm_stats after = ts_stats();
    CHECK_EQ(ix.calls, 4);
    CHECK_EQ(DELTA(after, before, commits), 4);
}

Test(inevitable, commit_refused_inside_atomic_section, .init = ts_setup, .fini = ts_teardown)
{
    CHECK_EQ(stm_begin_inevitable(), STM_OK);
    stm_atomic_begin();
    CHECK_EQ(stm_commit(), STM_ESTATE);
    CHECK(stm_in_transaction(), "the refused commit left the transaction running");
    stm_atomic_end();
    CHECK_EQ(stm_commit(), STM_OK);
}

/* ---- stm_should_break ------------------------------------------------------------ */

#define NODE_BYTES ((long long)sizeof(node))
#define CHURN_LIMIT (64LL << 20)

/* Allocates nodes until stm_should_break; returns the bytes allocated. */
static long long alloc_until_break(void)
{
    long long bytes = 0;
    while (!stm_should_break()) {
        ts_churn(sizeof(node));
        bytes += NODE_BYTES;
        if (bytes > CHURN_LIMIT) {
            CHECK(false, "stm_should_break never became true (%lld bytes)", bytes);
            break;
        }
    }
    return bytes;
}

static int tx_break_atomic(void *arg)
{
    ictx *ix = arg;
    CHECK(!stm_should_break(), "a fresh transaction has done no work");
    ix->n1 = alloc_until_break();
    CHECK(stm_should_break(), "still true");
    stm_atomic_begin();
    CHECK(!stm_should_break(), "never true inside an atomic section");
    ts_churn(256 << 10);
    CHECK(!stm_should_break(), "never true inside an atomic section, whatever the work");
    stm_atomic_end();
    CHECK(stm_should_break(), "true again once the section is closed");
    return STM_DONE;
}

Test(inevitable, should_break_is_false_inside_atomic_section, .init = ts_setup_small,
     .fini = ts_teardown)
{
    ictx ix = { 0 };
    CHECK(!stm_should_break(), "false outside transactions");
    ts_run(tx_break_atomic, &ix);
    CHECK(ix.n1 > 0, "some work was needed");
}

static int tx_measure(void *arg)
{
    ictx *ix = arg;
    ix->n1 = alloc_until_break();
    return STM_DONE;
}

static int tx_measure_abort_once(void *arg)
{
    ictx *ix = arg;
    if (ix->attempts++ == 0) {
        ix->n1 = alloc_until_break();
        stm_abort_and_retry();
    }
    ix->n2 = alloc_until_break();
    return STM_DONE;
}

Test(inevitable, should_break_threshold_grows_after_commit_and_shrinks_after_abort,
     .init = ts_setup_small, .fini = ts_teardown)
{
    ictx a = { 0 }, b = { 0 };
    ts_run(tx_measure, &a);
    ts_run(tx_measure, &b);
    CHECK(b.n1 > a.n1, "after a commit that reached the limit: %lld then %lld bytes",
          a.n1, b.n1);
    ictx c = { 0 };
    ts_run(tx_measure_abort_once, &c);
    CHECK(c.n2 < c.n1, "after an abort: %lld then %lld bytes", c.n1, c.n2);
}

/* ---- becoming inevitable after a steal ---------------------------------------------- */

/* A writes its protected P in place; B steals P (A's committed state) and,
 * in the second variant, commits a change to the stolen copy; then A
 * becomes inevitable.  stm_become_inevitable may abort once
 * (VALIDATE_INEVITABLE), but once it returned the transaction must commit:
 * the change B committed must be found while becoming inevitable, not at
 * the inevitable commit (where an abort is fatal). */
typedef struct steal_inev {
    bool thief_writes;
    int attempts;
    bool became;
    node *p;
    long final;
} steal_inev;

static node *volatile stolen_raw;

static int tx_make_victim(void *arg)
{
    steal_inev *sx = arg;
    sx->p = ts_new_node(1, NULL, NULL);
    return STM_DONE;
}

static int tx_a_write_steal_become(void *arg)
{
    steal_inev *sx = arg;
    node *p = *stm_root_slot(0);
    WR(p)->value += 1;
    if (sx->attempts++ == 0) {
        ls_set(1);
        ls_wait(2);                  /* B stole P (and maybe changed the copy) */
    }
    stm_become_inevitable();
    sx->became = true;
    sx->final = RD(p)->value;
    return STM_DONE;
}

static void a_write_steal_become(void *arg)
{
    steal_inev *sx = arg;
    ts_run(tx_make_victim, sx);
    stm_push_root(sx->p);
    stolen_raw = sx->p;
    ts_run(tx_a_write_steal_become, sx);
    stm_abort_info info;
    if (sx->attempts > 1) {
        CHECK_EQ(stm_last_abort(&info), 1);
        CHECK(info.reason == STM_ABORT_VALIDATE_INEVITABLE,
              "A aborted with %s", stm_abort_reason_name(info.reason));
    }
    stm_pop_root();
}

static int tx_b_steal_maybe_write(void *arg)
{
    steal_inev *sx = arg;
    node *c = RD(stolen_raw);
    CHECK_EQ(c->value, 1);
    if (sx->thief_writes)
        WR(c)->value = 100;
    return STM_DONE;
}

static void b_steal_maybe_write(void *arg)
{
    steal_inev *sx = arg;
    ls_wait(1);
#ifdef STM_TESTING
    stm_test_set_max_aborts(0);
#endif
    ts_run(tx_b_steal_maybe_write, sx);
    ls_set(2);
}

Test(inevitable, become_inevitable_after_steal_of_written_object, .init = ts_setup,
     .fini = ts_teardown)
{
    steal_inev sx = { .thief_writes = false };
    two_threads(a_write_steal_become, b_steal_maybe_write, &sx);
    CHECK_EQ(sx.attempts, 1);        /* a mere steal never aborts the owner */
    CHECK_EQ(sx.final, 2);
}

Test(inevitable, become_inevitable_after_stolen_copy_was_changed, .init = ts_setup,
     .fini = ts_teardown)
{
    steal_inev sx = { .thief_writes = true };
    two_threads(a_write_steal_become, b_steal_maybe_write, &sx);
    CHECK_EQ(sx.attempts, 2);        /* aborted once while becoming inevitable */
    CHECK_EQ(sx.final, 101);         /* then built on B's committed value */
}
