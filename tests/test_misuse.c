/* test_misuse.c -- programming errors reach the fatal handler with a
 * message naming the misuse; recoverable conditions return the documented
 * status (stm.h; docs/DESIGN.md 8); memory exhaustion (failure injection,
 * STM_TESTING builds) gives STM_ENOMEM with everything rolled back.
 *
 * A fatal handler that returns is followed by abort(), so the test handler
 * longjmps back (EXPECT_FATAL / CATCH_FATAL); the library may be left in an
 * inconsistent state, so each test checks one misuse, at its end. */
#include "support/injection.h"
#include "support/tx_macros.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(misuse, .timeout = 120);

TS_PREBUILT_NODE(g_x);

static int tx_noop(void *arg)
{
    (void)arg;
    return STM_DONE;
}

static void fatal_handler_only(void)
{
    stm_set_fatal_handler(ts_fatal_handler);
}

/* ---- outside a transaction ------------------------------------------------ */

typedef struct api_call {
    const char *name;
    void (*fn)(void);
    const char *expect;
} api_call;

static void c_read(void) { (void)stm_read(&g_x); }
static void c_write(void) { (void)stm_write(&g_x); }
static void c_allocate(void) { (void)stm_allocate(sizeof(node), T_NODE); }
static void c_minor_collect(void) { stm_minor_collect(); }
static void c_become_inevitable(void) { stm_become_inevitable(); }
static void c_abort_and_retry(void) { stm_abort_and_retry(); }
static void c_atomic_begin(void) { stm_atomic_begin(); }
static void c_atomic_end(void) { stm_atomic_end(); }
static void c_run(void) { (void)stm_run(tx_noop, NULL); }
static void c_begin_inevitable(void) { (void)stm_begin_inevitable(); }
static void c_commit(void) { (void)stm_commit(); }
static void c_push_root(void) { stm_push_root(&g_x); }
static void c_pop_root(void) { (void)stm_pop_root(); }
static void c_root_depth(void) { (void)stm_root_depth(); }
static void c_root_slot(void) { (void)stm_root_slot(0); }

/* Runs fn(); returns 1 if it called the fatal handler with `want` in the
 * message, 0 otherwise (`*fired` tells whether the handler ran at all).
 * (A function of its own so that setjmp clobbers no caller's locals.) */
static __attribute__((noinline)) int catch_fatal_call(void (*fn)(void), const char *want,
                                                      int *fired)
{
    int ok = 0, before = ts_fatal_count();
    CATCH_FATAL(ok, want, fn());
    *fired = ts_fatal_count() != before;
    return ok;
}

/* Runs every call (each must reach the fatal handler with `expect` in the
 * message, or its own expectation if set); returns the failures, one per
 * line, in `report`. */
static int run_calls(const api_call *calls, size_t n, const char *expect, char *report,
                     size_t cap)
{
    int failures = 0;
    report[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const char *want = calls[i].expect ? calls[i].expect : expect;
        int fired;
        if (!catch_fatal_call(calls[i].fn, want, &fired)) {
            failures++;
            size_t len = strlen(report);
            snprintf(report + len, cap - len, "\n  %s: %s", calls[i].name,
                     fired ? ts_fatal_message() : "returned normally (no fatal error)");
        }
    }
    return failures;
}

static const api_call outside_calls[] = {
    { "stm_read", c_read, NULL },
    { "stm_write", c_write, NULL },
    { "stm_allocate", c_allocate, NULL },
    { "stm_minor_collect", c_minor_collect, NULL },
    { "stm_become_inevitable", c_become_inevitable, NULL },
    { "stm_abort_and_retry", c_abort_and_retry, NULL },
    { "stm_atomic_begin", c_atomic_begin, NULL },
    { "stm_atomic_end", c_atomic_end, NULL },
};

Test(misuse, barriers_allocation_and_tx_calls_outside_a_transaction, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 1);
    char report[2048];
    int failures = run_calls(outside_calls, sizeof outside_calls / sizeof *outside_calls,
                             "outside a transaction", report, sizeof report);
    CHECK(failures == 0, "calls outside a transaction without the expected fatal error "
          "(\"outside a transaction\"):%s", report);
}

#if defined(STM_DEBUG) && STM_DEBUG > 0
/* A pointer resolved in the last transaction: debug builds always check. */
static int tx_read_x(void *arg)
{
    (void)arg;
    (void)stm_read(&g_x);
    return STM_DONE;
}

Test(misuse, read_after_the_transaction_is_fatal_in_debug_builds, .init = ts_setup,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 1);
    ts_run(tx_read_x, NULL);
    EXPECT_FATAL("outside a transaction", (void)stm_read(&g_x));
}
#endif

/* ---- a thread that never attached ------------------------------------------ */

static const api_call unattached_calls[] = {
    { "stm_run", c_run, NULL },
    { "stm_read", c_read, NULL },
    { "stm_write", c_write, NULL },
    { "stm_allocate", c_allocate, NULL },
    { "stm_begin_inevitable", c_begin_inevitable, NULL },
    { "stm_commit", c_commit, NULL },
    { "stm_become_inevitable", c_become_inevitable, NULL },
    { "stm_abort_and_retry", c_abort_and_retry, NULL },
    { "stm_atomic_begin", c_atomic_begin, NULL },
    { "stm_atomic_end", c_atomic_end, NULL },
    { "stm_push_root", c_push_root, NULL },
    { "stm_pop_root", c_pop_root, NULL },
    { "stm_root_depth", c_root_depth, NULL },
    { "stm_root_slot", c_root_slot, NULL },
    { "stm_minor_collect", c_minor_collect, NULL },
};

static char unattached_report[4096];
static int unattached_failures;
static int unattached_plain[8];

static void unattached_body(void *arg)
{
    (void)arg;
    unattached_failures = run_calls(unattached_calls,
                                    sizeof unattached_calls / sizeof *unattached_calls,
                                    "not attached", unattached_report,
                                    sizeof unattached_report);
    /* Queries answer without a fatal error. */
    stm_abort_info info;
    unattached_plain[0] = stm_in_transaction();
    unattached_plain[1] = stm_is_inevitable();
    unattached_plain[2] = stm_atomic_depth();
    unattached_plain[3] = stm_should_break();
    unattached_plain[4] = stm_last_abort(&info);
    unattached_plain[5] = stm_thread_detach();
    unattached_plain[6] = stm_publish(&g_x) != NULL;
    stm_stats s;
    s.size = sizeof s;
    unattached_plain[7] = stm_get_stats(&s);
}

Test(misuse, calls_from_a_thread_that_never_attached, .init = ts_setup, .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 1);
    ts_join(ts_spawn_unattached(unattached_body, NULL));
    CHECK(unattached_failures == 0,
          "calls from an unattached thread without a fatal error naming it "
          "(\"not attached\"):%s", unattached_report);
    CHECK_EQ(unattached_plain[0], 0);
    CHECK_EQ(unattached_plain[1], 0);
    CHECK_EQ(unattached_plain[2], 0);
    CHECK_EQ(unattached_plain[3], 0);
    CHECK_EQ(unattached_plain[4], 0);
    CHECK_EQ(unattached_plain[5], STM_ESTATE);
    CHECK_EQ(unattached_plain[6], 0);
    CHECK_EQ(unattached_plain[7], STM_OK);
}

/* ---- allocation sizes ---------------------------------------------------------- */

Test(misuse, allocate_size_zero, .init = ts_setup, .fini = ts_teardown)
{
    TX_BEGIN();
    EXPECT_FATAL("size 0", (void)stm_allocate(0, T_NODE));
}

static size_t alloc_size;
static void c_allocate_size(void) { (void)stm_allocate(alloc_size, T_NODE); }

Test(misuse, allocate_below_header_size, .init = ts_setup, .fini = ts_teardown)
{
    static const size_t sizes[] = { 1, 8, 16, sizeof(stm_header) - 1 };
    char report[512] = "";
    int failures = 0;
    TX_BEGIN();
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int fired;
        alloc_size = sizes[i];
        if (!catch_fatal_call(c_allocate_size, "smaller than the object header", &fired)) {
            failures++;
            size_t len = strlen(report);
            snprintf(report + len, sizeof report - len, " %zu (%s)", sizes[i],
                     fired ? ts_fatal_message() : "allocated, no fatal error");
        }
    }
    CHECK(failures == 0, "stm_allocate below sizeof(stm_header) = %zu was not fatal for sizes:%s",
          sizeof(stm_header), report);
}

Test(misuse, allocate_exactly_header_size_is_allowed, .init = ts_setup, .fini = ts_teardown)
{
    TX_BEGIN();
    stm_header *h = stm_allocate(sizeof(stm_header), T_NODE);
    CHECK(h != NULL, "a header-only object");
    CHECK_EQ(stm_get_tid(h), T_NODE);
    TX_COMMIT();
}

typedef struct big_ctx {
    int calls;
    size_t size;
    void *result;
} big_ctx;

static int tx_write_then_allocate_huge(void *arg)
{
    big_ctx *bx = arg;
    bx->calls++;
    WR(&g_x)->value = 99;
    bx->result = stm_allocate(bx->size, T_NODE);
    CHECK(false, "stm_allocate(%zu) returned %p in a regular transaction", bx->size,
          bx->result);
    return STM_DONE;
}

static void check_huge_in_run(size_t size)
{
    ts_register_prebuilt(&g_x, 1);
    big_ctx bx = { .size = size };
    stm_stats before = ts_stats();
    int r = stm_run(tx_write_then_allocate_huge, &bx);
    stm_stats after = ts_stats();
    CHECK_EQ(r, STM_ENOMEM);
    CHECK_EQ(bx.calls, 1);                 /* not retried */
    CHECK(!stm_in_transaction(), "rolled back");
    stm_abort_info info;
    CHECK_EQ(stm_last_abort(&info), 1);
    CHECK_EQ(info.reason, STM_ABORT_OUT_OF_MEMORY);
    CHECK_EQ(DELTA(after, before, aborts_by_reason[STM_ABORT_OUT_OF_MEMORY]), 1);
    CHECK_EQ(DELTA(after, before, commits), 0);
    /* The write before the allocation was rolled back. */
    TX_BEGIN();
    CHECK_EQ(RD(&g_x)->value, 1);
    TX_COMMIT();
    /* And the thread works normally afterwards. */
    ts_run(tx_noop, NULL);
}

Test(misuse, allocate_above_max_size_gives_enomem_from_run, .init = ts_setup,
     .fini = ts_teardown)
{
    check_huge_in_run(STM_MAX_OBJECT_SIZE + 1);
}

Test(misuse, allocate_size_max_gives_enomem_from_run, .init = ts_setup, .fini = ts_teardown)
{
    check_huge_in_run(SIZE_MAX);
}

static int tx_inevitable_huge(void *arg)
{
    big_ctx *bx = arg;
    bx->calls++;
    stm_become_inevitable();
    WR(&g_x)->value = 5;
    bx->result = stm_allocate(STM_MAX_OBJECT_SIZE + 1, T_NODE);
    return STM_DONE;
}

Test(misuse, allocate_above_max_size_in_inevitable_transaction_returns_null,
     .init = ts_setup, .fini = ts_teardown)
{
    ts_register_prebuilt(&g_x, 1);
    TX_BEGIN();
    CHECK(stm_allocate(STM_MAX_OBJECT_SIZE + 1, T_NODE) == NULL, "NULL when inevitable");
    CHECK(stm_allocate(SIZE_MAX, T_NODE) == NULL, "NULL when inevitable");
    CHECK(stm_in_transaction(), "the transaction goes on");
    node *n = ts_new_node(3, NULL, NULL);
    CHECK_EQ(n->value, 3);
    TX_COMMIT();
    big_ctx bx = { 0 };
    ts_run(tx_inevitable_huge, &bx);
    CHECK_EQ(bx.calls, 1);
    CHECK(bx.result == NULL, "NULL in stm_run once inevitable");
    TX_BEGIN();
    CHECK_EQ(RD(&g_x)->value, 5);          /* committed */
    TX_COMMIT();
}

/* ---- transaction calls in the wrong state --------------------------------------- */

static int tx_commit_inside_run(void *arg)
{
    int *r = arg;
    r[0] = stm_commit();
    stm_become_inevitable();
    r[1] = stm_commit();
    r[2] = stm_begin_inevitable();
    return STM_DONE;
}

Test(misuse, commit_without_begin_inevitable, .init = ts_setup, .fini = ts_teardown)
{
    CHECK_EQ(stm_commit(), STM_ESTATE);
    int r[3] = { 0, 0, 0 };
    ts_run(tx_commit_inside_run, r);
    CHECK_EQ(r[0], STM_ESTATE);
    CHECK_EQ(r[1], STM_ESTATE);
    CHECK_EQ(r[2], STM_ESTATE);
    CHECK_EQ(stm_commit(), STM_ESTATE);
}

static int tx_unbalanced_atomic_end(void *arg)
{
    (void)arg;
    stm_atomic_begin();
    stm_atomic_end();
    EXPECT_FATAL("without a matching", stm_atomic_end());
    return STM_DONE;
}

Test(misuse, unbalanced_atomic_end, .init = ts_setup, .fini = ts_teardown)
{
    (void)stm_run(tx_unbalanced_atomic_end, NULL);
}

static int tx_leaves_atomic_open(void *arg)
{
    (void)arg;
    stm_atomic_begin();
    return STM_DONE;
}

Test(misuse, run_function_returning_inside_atomic_section, .init = ts_setup,
     .fini = ts_teardown)
{
    EXPECT_FATAL("atomic", (void)stm_run(tx_leaves_atomic_open, NULL));
}

static int tx_returns_value(void *arg)
{
    return *(int *)arg;
}

static int tx_nested_returns_value(void *arg)
{
    (void)stm_run(tx_returns_value, arg);
    return STM_DONE;
}

Test(misuse, run_function_returning_2, .init = ts_setup, .fini = ts_teardown)
{
    int v = 2;
    EXPECT_FATAL("returned 2", (void)stm_run(tx_returns_value, &v));
}

Test(misuse, run_function_returning_negative, .init = ts_setup, .fini = ts_teardown)
{
    int v = -1;
    EXPECT_FATAL("returned -1", (void)stm_run(tx_returns_value, &v));
}

Test(misuse, nested_run_function_returning_bad_value, .init = ts_setup, .fini = ts_teardown)
{
    int v = 7;
    EXPECT_FATAL("returned 7", (void)stm_run(tx_nested_returns_value, &v));
}

Test(misuse, run_with_null_function, .init = ts_setup, .fini = ts_teardown)
{
    EXPECT_FATAL("NULL", (void)stm_run(NULL, NULL));
}

static int tx_pushes_without_pop(void *arg)
{
    (void)arg;
    stm_push_root(&g_x);
    return STM_DONE;
}

static int tx_pops_below_its_start(void *arg)
{
    (void)arg;
    (void)stm_pop_root();
    return STM_DONE;
}

Test(misuse, run_function_leaving_a_root_pushed, .init = ts_setup, .fini = ts_teardown)
{
    EXPECT_FATAL("shadow stack", (void)stm_run(tx_pushes_without_pop, NULL));
}

Test(misuse, run_function_popping_roots_of_the_caller, .init = ts_setup, .fini = ts_teardown)
{
    stm_push_root(&g_x);
    stm_push_root(&g_x);
    EXPECT_FATAL("shadow stack", (void)stm_run(tx_pops_below_its_start, NULL));
}

Test(misuse, pop_from_empty_shadow_stack, .init = ts_setup, .fini = ts_teardown)
{
    stm_push_root(&g_x);
    CHECK_PTR_EQ(stm_pop_root(), &g_x);
    EXPECT_FATAL("empty", (void)stm_pop_root());
}

static void setup_small_stack(void)
{
    ts_options o = { .shadow_stack_size = 8 };
    ts_setup_with(&o);
}

Test(misuse, shadow_stack_overflow, .init = setup_small_stack, .fini = ts_teardown)
{
    for (int i = 0; i < 8; i++)
        stm_push_root(&g_x);
    CHECK_EQ(stm_root_depth(), 8);
    EXPECT_FATAL("overflow", stm_push_root(&g_x));
}

Test(misuse, root_slot_beyond_depth, .init = ts_setup, .fini = ts_teardown)
{
    stm_push_root(&g_x);
    EXPECT_FATAL("beyond", (void)stm_root_slot(1));
}

static int tx_abort_when_inevitable(void *arg)
{
    (void)arg;
    stm_become_inevitable();
    EXPECT_FATAL("inevitable", stm_abort_and_retry());
    return STM_DONE;
}

Test(misuse, abort_and_retry_in_inevitable_transaction, .init = ts_setup, .fini = ts_teardown)
{
    (void)stm_run(tx_abort_when_inevitable, NULL);
}

Test(misuse, abort_and_retry_in_explicit_inevitable_transaction, .init = ts_setup,
     .fini = ts_teardown)
{
    TX_BEGIN();
    EXPECT_FATAL("inevitable", stm_abort_and_retry());
}

/* ---- configuration and threads --------------------------------------------------- */

Test(misuse, init_rejects_bad_configurations, .init = fatal_handler_only)
{
    stm_config cfg;
    CHECK_EQ(stm_init(NULL), STM_EINVAL);
    ts_config(&cfg, NULL);
    cfg.object_size = NULL;                /* one callback without the other */
    CHECK_EQ(stm_init(&cfg), STM_EINVAL);
    ts_config(&cfg, NULL);
    cfg.trace = NULL;
    CHECK_EQ(stm_init(&cfg), STM_EINVAL);
    ts_config(&cfg, NULL);
    cfg.size = 4;                          /* older than any real caller */
    CHECK_EQ(stm_init(&cfg), STM_EINVAL);
    ts_config(&cfg, NULL);
    cfg.nursery_size = 100;
    CHECK_EQ(stm_init(&cfg), STM_EINVAL);
    ts_config(&cfg, NULL);
    cfg.max_threads = 1u << 20;
    CHECK_EQ(stm_init(&cfg), STM_EINVAL);
    /* None of these initialised the library. */
    CHECK_EQ(stm_thread_attach(), STM_ESTATE);
    stm_config got;
    stm_config_init(&got);
    CHECK_EQ(stm_get_config(&got), STM_ESTATE);
    ts_config(&cfg, NULL);
    cfg.nursery_size = 1000;               /* rounded up by the library */
    CHECK_EQ(stm_init(&cfg), STM_OK);
    CHECK_EQ(stm_get_config(NULL), STM_EINVAL);
    got.size = 4;
    CHECK_EQ(stm_get_config(&got), STM_EINVAL);
    stm_config_init(&got);
    CHECK_EQ(stm_get_config(&got), STM_OK);
    CHECK_EQ(got.size, sizeof got);
    CHECK_EQ(got.nursery_size % 16, 0);
    CHECK(got.nursery_size >= 1000 && got.nursery_size < 1016, "nursery %zu", got.nursery_size);
    CHECK_PTR_EQ(got.trace, cfg.trace);
    CHECK_EQ(got.major_growth_percent, 100);   /* zero asked: the default */
    /* A caller compiled against a shorter stm_config gets just those fields. */
    stm_config old;
    memset(&old, 0xab, sizeof old);
    old.size = offsetof(stm_config, heap_limit);
    CHECK_EQ(stm_get_config(&old), STM_OK);
    CHECK_EQ(old.size, offsetof(stm_config, heap_limit));
    CHECK_EQ(old.nursery_size, got.nursery_size);
    CHECK_EQ(old.heap_limit, (size_t)0xabababababababab);   /* untouched */
    CHECK_EQ(stm_init(&cfg), STM_ESTATE);  /* only once */
    CHECK_EQ(stm_thread_attach(), STM_OK);
    CHECK_EQ(stm_thread_attach(), STM_ESTATE);
    CHECK_EQ(stm_thread_detach(), STM_OK);
    CHECK_EQ(stm_thread_detach(), STM_ESTATE);
}

Test(misuse, detach_inside_a_transaction, .init = ts_setup, .fini = ts_teardown)
{
    TX_BEGIN();
    CHECK_EQ(stm_thread_detach(), STM_ESTATE);
    CHECK(stm_in_transaction(), "still attached and in the transaction");
    TX_COMMIT();
    CHECK_EQ(stm_thread_detach(), STM_OK);
}

static void setup_two_threads_max(void)
{
    stm_set_fatal_handler(ts_fatal_handler);
    stm_config cfg;
    ts_config(&cfg, NULL);
    cfg.max_threads = 2;
    cr_assert_eq(stm_init(&cfg), STM_OK);
    cr_assert_eq(stm_thread_attach(), STM_OK);
}

static int third_attach;
static void attach_third(void *arg)
{
    (void)arg;
    third_attach = stm_thread_attach();
}

static void second_then_third(void *arg)
{
    (void)arg;
    /* We are the second attached thread; a third one is refused. */
    ts_join(ts_spawn_unattached(attach_third, NULL));
}

Test(misuse, attach_beyond_max_threads, .init = setup_two_threads_max, .fini = ts_teardown)
{
    ts_join(ts_spawn(second_then_third, NULL));
    CHECK_EQ(third_attach, STM_EINVAL);
}

Test(misuse, register_prebuilt_rejects_bad_objects, .init = ts_setup, .fini = ts_teardown)
{
    static node plain __attribute__((aligned(STM_ALIGNMENT)));
    static char buf[2 * sizeof(node)] __attribute__((aligned(STM_ALIGNMENT)));
    CHECK_EQ(stm_register_prebuilt(NULL), STM_EINVAL);
    plain.hdr.tid = T_NODE;                /* no STM_PREBUILT flags */
    CHECK_EQ(stm_register_prebuilt(&plain), STM_EINVAL);
    node *mis = (node *)(buf + 8);         /* misaligned */
    mis->hdr = (stm_header)STM_PREBUILT(T_NODE);
    CHECK_EQ(stm_register_prebuilt(mis), STM_EINVAL);
    CHECK_EQ(stm_register_global_root(NULL), STM_EINVAL);
    CHECK_EQ(stm_register_prebuilt(&g_x), STM_OK);
}

/* ---- stm_publish in the wrong state ---------------------------------------------- */

static int tx_publish_inside(void *arg)
{
    void **r = arg;
    node *n = ts_new_node(1, NULL, NULL);
    r[0] = stm_publish(n);
    return STM_DONE;
}

Test(misuse, publish_returns_null_on_misuse, .init = ts_setup, .fini = ts_teardown)
{
    void *r[1] = { (void *)1 };
    ts_run(tx_publish_inside, r);
    CHECK(r[0] == NULL, "stm_publish inside a regular transaction");
    CHECK(stm_publish(NULL) == NULL, "stm_publish(NULL)");
    TX_BEGIN();
    node *n = ts_new_node(1, NULL, NULL);
    CHECK(stm_publish(n) == NULL, "stm_publish of an object created by the running "
                                  "inevitable transaction");
    TX_COMMIT();
    stm_push_root(n);
    TX_BEGIN();
    n = *stm_root_slot(0);
    WR(n)->value = 2;
    CHECK(stm_publish(n) == NULL, "stm_publish of an object written by the running "
                                  "inevitable transaction");
    TX_COMMIT();
    n = stm_pop_root();
    node *pub = stm_publish(n);
    CHECK(pub != NULL && pub != n, "stm_publish of a committed object");
    CHECK_EQ(pub->value, 2);
}

/* An object created by a running transaction must not reach another
 * thread through raw memory: the thread that finds it gets a fatal error. */
static node *volatile escaped;
static int escape_caught;
static char escape_msg[512];

static int tx_creates_and_leaks(void *arg)
{
    (void)arg;
    escaped = ts_new_node(1, NULL, NULL);
    ls_set(1);
    ls_wait(2);
    return STM_DONE;
}

static void a_leaks(void *arg)
{
    (void)arg;
    ts_run(tx_creates_and_leaks, NULL);
}

static int tx_finds_escaped(void *arg)
{
    (void)arg;
    CATCH_FATAL(escape_caught, "must not escape", (void)stm_read(escaped));
    snprintf(escape_msg, sizeof escape_msg, "%s", ts_fatal_message());
    return STM_DONE;
}

static void b_finds(void *arg)
{
    (void)arg;
    ls_wait(1);
    TX_BEGIN();
    (void)tx_finds_escaped(NULL);
    /* (the transaction is left open: the fatal error ended it abnormally) */
    ls_set(2);
    pthread_exit(NULL);   /* no detach: the fatal error left us in the transaction */
}

Test(misuse, uncommitted_object_escaping_through_raw_memory, .init = ts_setup,
     .fini = ts_teardown)
{
    pthread_t th = ts_spawn(b_finds, NULL);
    a_leaks(NULL);
    ts_join(th);
    CHECK(escape_caught, "reading another thread's uncommitted object: fatal message \"%s\"",
          escape_msg);
}

/* ---- memory exhaustion (failure injection) ---------------------------------------- */

#ifdef STM_TESTING

/* stm_init and stm_thread_attach: STM_ENOMEM, and a retry succeeds. */
static void body_init(long n)
{
    stm_config cfg;
    ts_config(&cfg, NULL);
    stm_test_fail_allocations(n);
    int r = stm_init(&cfg);
    bool saw_enomem = false;
    TS_CHILD_CHECK(r == STM_OK || r == STM_ENOMEM, "stm_init returned %d", r);
    if (r == STM_ENOMEM) {
        saw_enomem = true;
        stm_test_fail_allocations(-1);
        r = stm_init(&cfg);
        TS_CHILD_CHECK(r == STM_OK, "stm_init after ENOMEM returned %d", r);
        stm_test_fail_allocations(n);   /* fail again, now in attach */
    }
    r = stm_thread_attach();
    TS_CHILD_CHECK(r == STM_OK || r == STM_ENOMEM, "stm_thread_attach returned %d", r);
    stm_test_fail_allocations(-1);
    if (r == STM_ENOMEM) {
        saw_enomem = true;
        r = stm_thread_attach();
        TS_CHILD_CHECK(r == STM_OK, "stm_thread_attach after ENOMEM returned %d", r);
    }
    r = stm_run(tx_noop, NULL);
    TS_CHILD_CHECK(r == STM_OK, "stm_run returned %d", r);
    _exit(saw_enomem ? TS_CHILD_ENOMEM : 0);
}

Test(misuse, out_of_memory_in_init_and_attach, .init = fatal_handler_only)
{
    ts_injection_sweep(body_init, 100, 10, "stm_init/stm_thread_attach");
}

/* A small transaction touching every kind of copy: reads a prebuilt
 * object, writes it (private copy), writes a protected object in place
 * (backup), allocates enough to collect twice, allocates a large object,
 * and commits (stubs). */
TS_PREBUILT_NODE(g_oom);

static int tx_oom_scenario(void *arg)
{
    long *runs = arg;
    (*runs)++;
    node *p = *stm_root_slot(0);
    long base = RD(&g_oom)->value;
    WR(p)->value = base + 1;
    node *head = NULL;
    for (int i = 0; i < 3000; i++)
        head = ts_new_node(i, head, NULL);
    stm_push_root(head);
    array *a = stm_allocate(ARRAY_SIZE(140000), T_ARRAY);
    head = stm_pop_root();
    if (a) {
        a = stm_write(a);
        a->n = 140000;
        a->items[0] = head;
    }
    node *w = WR(&g_oom);
    w->value = base + 1;
    w->left = head;
    return STM_DONE;
}

static int tx_make_p(void *arg)
{
    node **p = arg;
    *p = ts_new_node(0, NULL, NULL);
    return STM_DONE;
}

static void check_state(long expect)
{
    node *p = *stm_root_slot(0);
    TS_CHILD_CHECK(p->value == expect, "protected object: %ld, expected %ld", p->value, expect);
    int r = stm_begin_inevitable();
    TS_CHILD_CHECK(r == STM_OK, "begin_inevitable %d", r);
    node *g = RD(&g_oom);
    TS_CHILD_CHECK(g->value == expect, "public object: %ld, expected %ld", g->value, expect);
    long len = 0;
    for (node *q = g->left; q; q = RD(q)->left)
        len++;
    TS_CHILD_CHECK(len == (expect ? 3000 : 0), "list of %ld nodes", len);
    r = stm_commit();
    TS_CHILD_CHECK(r == STM_OK, "commit %d", r);
}

static void body_tx(long n)
{
    stm_config cfg;
    ts_options o = { .nursery_size = 64 << 10 };
    ts_config(&cfg, &o);
    TS_CHILD_CHECK(stm_init(&cfg) == STM_OK, "init");
    TS_CHILD_CHECK(stm_thread_attach() == STM_OK, "attach");
    g_oom.value = 0;
    TS_CHILD_CHECK(stm_register_prebuilt(&g_oom) == STM_OK, "prebuilt");
    node *p = NULL;
    TS_CHILD_CHECK(stm_run(tx_make_p, &p) == STM_OK, "setup");
    stm_push_root(p);
    long runs = 0;
    stm_test_fail_allocations(n);
    int r = stm_run(tx_oom_scenario, &runs);
    stm_test_fail_allocations(-1);
    TS_CHILD_CHECK(r == STM_OK || r == STM_ENOMEM, "stm_run returned %d", r);
    TS_CHILD_CHECK(runs == 1, "the function ran %ld times", runs);
    TS_CHILD_CHECK(stm_root_depth() == 1, "root depth %zu", stm_root_depth());
    TS_CHILD_CHECK(!stm_in_transaction(), "left in a transaction");
    if (r == STM_ENOMEM) {
        check_state(0);                 /* rolled back */
        runs = 0;
        r = stm_run(tx_oom_scenario, &runs);
        TS_CHILD_CHECK(r == STM_OK, "stm_run after ENOMEM returned %d", r);
        check_state(1);
        _exit(TS_CHILD_ENOMEM);
    }
    check_state(1);
}

Test(misuse, out_of_memory_in_a_transaction_each_injection_point)
{
    ts_injection_sweep(body_tx, 300, 15, "transaction scenario");
}

/* The same scenario repeated in one process, failure after failure: the
 * library must stay consistent (and, under asan, not leak). */
static int tx_small(void *arg)
{
    long *k = arg;
    node *head = NULL;
    for (int i = 0; i < 200; i++)
        head = ts_new_node(i, head, NULL);
    node *w = WR(&g_oom);
    w->value += 1;
    w->left = head;
    node *p = *stm_root_slot(0);
    WR(p)->value += 1;
    (*k)++;
    return STM_DONE;
}

static int tx_make_p2(void *arg)
{
    node **p = arg;
    *p = ts_new_node(0, NULL, NULL);
    return STM_DONE;
}

Test(misuse, out_of_memory_repeatedly_in_one_process, .init = ts_setup_small,
     .fini = ts_teardown)
{
    ts_register_prebuilt(&g_oom, 0);
    node *p = NULL;
    ts_run(tx_make_p2, &p);
    stm_push_root(p);
    long committed = 0, enomem = 0;
    for (long n = 0; n < 30; n++) {
        long k = 0;
        stm_test_fail_allocations(n);
        int r = stm_run(tx_small, &k);
        stm_test_fail_allocations(-1);
        CHECK(r == STM_OK || r == STM_ENOMEM, "n=%ld: stm_run returned %d", n, r);
        if (r == STM_OK)
            committed++;
        else
            enomem++;
        CHECK_EQ(stm_root_depth(), 1);
        TX_BEGIN();
        CHECK_EQ(RD(&g_oom)->value, committed);
        CHECK_EQ(RD(*stm_root_slot(0))->value, committed);
        TX_COMMIT();
    }
    CHECK(enomem > 0, "some injected failures were reported");
}

#endif /* STM_TESTING */
