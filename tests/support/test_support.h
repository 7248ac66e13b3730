/* test_support.h -- the common ground of the Criterion suites in tests/:
 *
 *   - an object model: T_NODE (a long and two pointers) and T_ARRAY (a
 *     length and that many pointers), with the size and trace callbacks;
 *   - fixtures: ts_setup (default nursery), ts_setup_small (64 KiB),
 *     ts_setup_tiny (4 KiB); each calls stm_config_init/stm_init and
 *     attaches the main thread, with ts_fatal_handler installed;
 *   - fatal-error capture: EXPECT_FATAL(substring, statement) runs the
 *     statement and asserts that it called the fatal handler with a message
 *     containing `substring` (the handler longjmps back);
 *   - CHECK(cond, fmt, ...): an assertion usable in any thread (cr_assert
 *     only works in the thread that runs the test);
 *   - lockstep: ls_set(n) / ls_wait(n), a step counter under a mutex, so
 *     that two threads run in a fixed order ("A does step 1, sets 1; B
 *     waits for 1, does step 2, sets 2; ..."), and two_threads() which
 *     runs one function in the test's thread and one in a new attached
 *     thread and joins them;
 *   - small helpers: ts_stats(), ts_new_node(), ts_run().
 *
 * Every test runs in its own process (Criterion forks), so the global
 * state of the library and of these helpers is fresh in each test. */
#ifndef TEST_SUPPORT_H
#define TEST_SUPPORT_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <stm.h>
#ifdef STM_TESTING
#include "stm_testing.h"
#endif

/* ---- object model ---------------------------------------------------- */

enum { T_NODE = 11, T_ARRAY = 12 };

typedef struct node {
    stm_header hdr;
    long value;
    struct node *left;
    struct node *right;
} node;

typedef struct array {
    stm_header hdr;
    long n;
    void *items[];
} array;

#define ARRAY_SIZE(n) (sizeof(array) + (size_t)(n) * sizeof(void *))

size_t ts_object_size(const void *obj);
void ts_trace(void *obj, stm_visit_fn *visit, void *ctx);

/* A statically allocated, registered public node (call in a test, outside
 * transactions): ts_prebuilt(&g, value). */
#define TS_PREBUILT_NODE(name) \
    static node name __attribute__((aligned(STM_ALIGNMENT))) = { STM_PREBUILT(T_NODE), 0, 0, 0 }
void ts_register_prebuilt(node *n, long value);

/* ---- fixtures ----------------------------------------------------------- */

/* Settings the next ts_setup uses (set them in a custom .init before
 * calling ts_setup_with). */
typedef struct ts_options {
    size_t nursery_size;        /* 0: library default */
    unsigned max_attempts;      /* 0: library default */
    size_t shadow_stack_size;   /* 0: library default */
} ts_options;
void ts_config(stm_config *cfg, const ts_options *opt);
void ts_setup_with(const ts_options *opt);
void ts_setup(void);            /* defaults */
void ts_setup_small(void);      /* 64 KiB nursery */
void ts_setup_tiny(void);       /* 4 KiB nursery: almost every allocation collects */
void ts_teardown(void);         /* detaches the main thread if attached and idle */

/* ---- fatal errors ------------------------------------------------------- */

/* The fixtures install it.  While a jmp_buf is armed in the calling thread
 * (EXPECT_FATAL), it records the message and longjmps there; otherwise it
 * reports an unexpected fatal error as a test failure. */
void ts_fatal_handler(const char *msg);
void ts_fatal_arm(jmp_buf *jb);
void ts_fatal_disarm(void);
const char *ts_fatal_message(void);   /* the last message (this process) */
int ts_fatal_count(void);

/* Runs `stmt`; asserts (in the test's thread) that it called the fatal
 * handler with a message containing `substr`.  The library may be left in
 * an inconsistent state afterwards (the handler did not return): keep such
 * checks at the end of a test. */
#define EXPECT_FATAL(substr, ...)                                                      \
    do {                                                                               \
        jmp_buf ts_jb_;                                                                \
        volatile int ts_got_ = 0;                                                      \
        if (setjmp(ts_jb_) == 0) {                                                     \
            ts_fatal_arm(&ts_jb_);                                                     \
            __VA_ARGS__;                                                               \
            ts_fatal_disarm();                                                         \
        } else {                                                                       \
            ts_got_ = 1;                                                               \
        }                                                                              \
        ts_fatal_disarm();                                                             \
        CHECK(ts_got_, "expected a fatal error mentioning \"%s\" from: %s", (substr),  \
              #__VA_ARGS__);                                                           \
        CHECK(strstr(ts_fatal_message(), (substr)) != NULL,                            \
              "the fatal message \"%s\" does not mention \"%s\"", ts_fatal_message(),  \
              (substr));                                                               \
    } while (0)

/* The same, for use in a thread other than the test's: returns 1 if the
 * fatal handler ran with a message containing `substr`; the message is
 * left in ts_fatal_message(). */
#define CATCH_FATAL(result, substr, ...)                                               \
    do {                                                                               \
        jmp_buf ts_jb_;                                                                \
        volatile int ts_got_ = 0;                                                      \
        if (setjmp(ts_jb_) == 0) {                                                     \
            ts_fatal_arm(&ts_jb_);                                                     \
            __VA_ARGS__;                                                               \
        } else {                                                                       \
            ts_got_ = 1;                                                               \
        }                                                                              \
        ts_fatal_disarm();                                                             \
        (result) = ts_got_ && strstr(ts_fatal_message(), (substr)) != NULL;            \
    } while (0)

/* ---- assertions in any thread -------------------------------------------- */

__attribute__((format(printf, 4, 5)))
void ts_check_failed(const char *file, int line, const char *cond, const char *fmt, ...);
#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond))                                                                   \
            ts_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                   \
    } while (0)
#define CHECK_EQ(a, b)                                                                 \
    do {                                                                               \
        long long ts_a_ = (long long)(a), ts_b_ = (long long)(b);                      \
        if (ts_a_ != ts_b_)                                                            \
            ts_check_failed(__FILE__, __LINE__, #a " == " #b, "%s == %lld, expected %lld", \
                            #a, ts_a_, ts_b_);                                         \
    } while (0)
#define CHECK_PTR_EQ(a, b)                                                             \
    do {                                                                               \
        const void *ts_a_ = (a), *ts_b_ = (b);                                         \
        if (ts_a_ != ts_b_)                                                            \
            ts_check_failed(__FILE__, __LINE__, #a " == " #b, "%s is %p, expected %p (%s)", \
                            #a, ts_a_, ts_b_, #b);                                     \
    } while (0)
#define CHECK_PTR_NEQ(a, b)                                                            \
    do {                                                                               \
        const void *ts_a_ = (a), *ts_b_ = (b);                                         \
        if (ts_a_ == ts_b_)                                                            \
            ts_check_failed(__FILE__, __LINE__, #a " != " #b, "%s and %s are both %p", \
                            #a, #b, ts_a_);                                            \
    } while (0)

#ifdef STM_TESTING
/* The copy kind of `p` as seen by the calling thread. */
#define CHECK_KIND(p, k)                                                               \
    do {                                                                               \
        stm_test_kind ts_k_ = stm_test_kind_of(p);                                     \
        if (ts_k_ != (k))                                                              \
            ts_check_failed(__FILE__, __LINE__, "kind_of(" #p ") == " #k,              \
                            "%s (%p) is %s, expected %s", #p, (const void *)(p),       \
                            stm_test_kind_name(ts_k_), stm_test_kind_name(k));         \
    } while (0)
#endif

/* ---- threads and lockstep ------------------------------------------------ */

typedef void ts_thread_fn(void *arg);

void ls_set(int step);          /* step := n, wake the waiters */
void ls_wait(int step);         /* block until step >= n (fails the test if a
                                   thread failed meanwhile) */
int ls_step(void);

/* Runs a(arg) in the calling (attached) thread and b(arg) in a new thread
 * that attaches before and detaches after, then joins; fails the test if
 * either side failed a CHECK. */
void two_threads(ts_thread_fn *a, ts_thread_fn *b, void *arg);
/* A new attached thread running fn(arg); ts_join waits for it and fails
 * the test if it failed a CHECK. */
pthread_t ts_spawn(ts_thread_fn *fn, void *arg);
void ts_join(pthread_t th);
/* A new thread that does NOT attach. */
pthread_t ts_spawn_unattached(ts_thread_fn *fn, void *arg);

/* ---- helpers ------------------------------------------------------------- */

stm_stats ts_stats(void);
/* Inside a transaction: a new node; left and right are kept alive (and
 * updated) across the allocation through the shadow stack. */
node *ts_new_node(long value, node *left, node *right);
/* Inside a transaction: a complete tree of `depth` levels whose values
 * count up from *next in post-order (children before their parent); every
 * pointer held in C lives on the shadow stack across allocations. */
node *ts_build_tree(int depth, long *next);
/* Walks a tree from ts_build_tree: returns its node count; *ok becomes
 * false if its shape or post-order values differ (a lost, swapped or
 * stale child).  *next: the first value expected. */
long ts_check_tree(node *t, int depth, long *next, bool *ok);
/* stm_run, asserting STM_OK. */
void ts_run(stm_tx_fn *fn, void *arg);
/* Allocates `bytes` of short-lived garbage (in node-sized pieces). */
void ts_churn(size_t bytes);
/* True if the low 16 bits of the `n` pointers (the read-cache slots) are
 * pairwise distinct. */
bool ts_distinct_cache_slots(const void *const *ptrs, size_t n);

#endif
