/* test_rtm.c -- lock elision (docs/DESIGN.md 12, "Lock elision"):
 *   - detection: the CPUID verdict as a pure function of register values,
 *     the abort classification, STM_RTM / stm_config.rtm / the self-test
 *     as stm_init sees them, and the documented failure of "on";
 *   - the retry policy, driven by scripted abort statuses: transient
 *     aborts retried a bounded number of times, persistent ones falling
 *     back at once, a lock-held abort waiting for the lock to be free;
 *   - the statistics per cause;
 *   - correctness with two threads under the emulation, the script and
 *     (where the CPU has it) the hardware.
 * Each test picks its backend and STM_RTM with setenv before stm_init, so
 * the suite gives the same results whatever STM_RTM_BACKEND and STM_RTM
 * the whole run uses. */
#include "support/tx_macros.h"

#include <sched.h>
#include <stdlib.h>

#include "stm/arch_rtm.h"
#ifdef STM_TESTING
#include "support/stm_testing_rtm.h"
#endif

/* ---- detection: pure functions (every build) ------------------------------ */

/* CPUID leaf 1 EAX for family 6, `model`, `stepping`. */
static unsigned leaf1(unsigned model, unsigned stepping)
{
    return stepping | (model & 0xfu) << 4 | 6u << 8 | (model >> 4) << 16;
}

static stm_rtm_verdict verdict(bool intel, unsigned model, unsigned stepping, bool rtm,
                               bool always_abort)
{
    stm_rtm_cpuid c = { .max_leaf = 0x1b, .intel = intel, .leaf1_eax = leaf1(model, stepping),
                        .leaf7_ebx = rtm ? (1u << 11) | (1u << 4) : 0,
                        .leaf7_edx = always_abort ? 1u << 11 : 0 };
    return stm_rtm_cpu_verdict(&c);
}

Test(rtm_detect, cpuid_rtm_bit_and_always_abort)
{
    stm_rtm_cpuid old = { .max_leaf = 6, .intel = true, .leaf1_eax = leaf1(0xa7, 1),
                          .leaf7_ebx = 1u << 11 };
    CHECK_EQ(stm_rtm_cpu_verdict(&old), STM_RTM_CPU_ABSENT);   /* no leaf 7 */
    CHECK_EQ(verdict(true, 0xa7, 1, false, false), STM_RTM_CPU_ABSENT);
    CHECK_EQ(verdict(true, 0xa7, 1, true, false), STM_RTM_CPU_PRESENT);
    CHECK_EQ(verdict(true, 0xa7, 1, true, true), STM_RTM_CPU_ALWAYS_ABORT);
    /* Only bit 11 counts: HLE alone (bit 4) is not RTM. */
    stm_rtm_cpuid hle = { .max_leaf = 7, .intel = true, .leaf1_eax = leaf1(0xa7, 1),
                          .leaf7_ebx = 1u << 4 };
    CHECK_EQ(stm_rtm_cpu_verdict(&hle), STM_RTM_CPU_ABSENT);
}

Test(rtm_detect, cpuid_errata_denylist)
{
    /* Haswell: all but Xeon E7 v3 (0x3f) stepping >= 4. */
    CHECK_EQ(verdict(true, 0x3c, 3, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x45, 1, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x46, 1, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x3f, 2, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x3f, 4, true, false), STM_RTM_CPU_PRESENT);
    /* Skylake-SP up to stepping 5; Cascade Lake (stepping 7) is fine. */
    CHECK_EQ(verdict(true, 0x55, 4, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x55, 7, true, false), STM_RTM_CPU_PRESENT);
    /* Skylake / Kaby Lake / Coffee Lake clients. */
    CHECK_EQ(verdict(true, 0x4e, 3, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x5e, 3, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x8e, 0xc, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x9e, 0xc, true, false), STM_RTM_CPU_DENYLISTED);
    CHECK_EQ(verdict(true, 0x9e, 0xd, true, false), STM_RTM_CPU_PRESENT);
    /* The list is Intel's: another vendor with the same numbers passes. */
    CHECK_EQ(verdict(false, 0x3c, 3, true, false), STM_RTM_CPU_PRESENT);
    /* Extended model bits matter: 0x3c and 0x0c are different models. */
    CHECK_EQ(verdict(true, 0x0c, 3, true, false), STM_RTM_CPU_PRESENT);
}

Test(rtm_detect, abort_classification)
{
    CHECK_EQ(stm_rtm_classify(STM_XABORT_STATUS(STM_XCODE_BUSY)), STM_RTM_CAUSE_BUSY);
    /* The hardware may add RETRY to an explicit abort: still busy. */
    CHECK_EQ(stm_rtm_classify(STM_XABORT_STATUS(STM_XCODE_BUSY) | STM_XABORT_RETRY),
             STM_RTM_CAUSE_BUSY);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_STATUS(STM_XCODE_FATAL)), STM_RTM_CAUSE_EXPLICIT);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_STATUS(0x12)), STM_RTM_CAUSE_EXPLICIT);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_CAPACITY | STM_XABORT_RETRY | STM_XABORT_CONFLICT),
             STM_RTM_CAUSE_CAPACITY);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_DEBUG | STM_XABORT_RETRY), STM_RTM_CAUSE_DEBUG);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_NESTED | STM_XABORT_CONFLICT), STM_RTM_CAUSE_NESTED);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_CONFLICT | STM_XABORT_RETRY), STM_RTM_CAUSE_CONFLICT);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_CONFLICT), STM_RTM_CAUSE_CONFLICT);
    CHECK_EQ(stm_rtm_classify(STM_XABORT_RETRY), STM_RTM_CAUSE_RETRY);
    CHECK_EQ(stm_rtm_classify(0), STM_RTM_CAUSE_UNKNOWN);
    /* A code without the EXPLICIT bit is not explicit (garbage bits). */
    CHECK_EQ(stm_rtm_classify(0xff000000u), STM_RTM_CAUSE_UNKNOWN);
}

Test(rtm_detect, stats_fields_are_named)
{
    static const char *const names[] = {
        "rtm_elided", "rtm_fallbacks", "rtm_abort_busy", "rtm_abort_conflict",
        "rtm_abort_retry", "rtm_abort_capacity", "rtm_abort_debug", "rtm_abort_nested",
        "rtm_abort_explicit", "rtm_abort_unknown",
    };
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        bool found = false;
        for (unsigned i = 0; stm_stats_field_name(i); i++)
            found |= !strcmp(stm_stats_field_name(i), names[k]);
        CHECK(found, "no statistics field %s", names[k]);
    }
}

#ifdef STM_TESTING
/* ---- stm_init: modes, environment, detection, self-test ------------------- */

/* stm_init with STM_RTM_BACKEND=backend, STM_RTM=env (NULL: unset) and
 * stm_config.rtm = mode; attaches the thread if it succeeded. */
static int rtm_init(const char *backend, const char *env, int mode)
{
    stm_set_fatal_handler(ts_fatal_handler);
    cr_assert_eq(setenv("STM_RTM_BACKEND", backend, 1), 0);
    if (env)
        cr_assert_eq(setenv("STM_RTM", env, 1), 0);
    else
        cr_assert_eq(unsetenv("STM_RTM"), 0);
    stm_config cfg;
    ts_config(&cfg, NULL);
    cfg.rtm = mode;
    int r = stm_init(&cfg);
    if (r == STM_OK)
        cr_assert_eq(stm_thread_attach(), STM_OK);
    return r;
}

static const char *why_now(void)
{
    const char *why = NULL;
    (void)stm_rtm_enabled(&why);
    cr_assert_not_null(why);
    return why;
}

#define CHECK_WHY(substr) \
    CHECK(strstr(why_now(), (substr)) != NULL, "reason \"%s\" lacks \"%s\"", why_now(), (substr))

TestSuite(rtm_init, .fini = ts_teardown, .timeout = 60);

Test(rtm_init, off_by_environment_or_config)
{
    CHECK_EQ(rtm_init("emulate", "off", STM_RTM_AUTO), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
    CHECK_WHY("off: disabled");
}

Test(rtm_init, config_off)
{
    CHECK_EQ(rtm_init("emulate", NULL, STM_RTM_OFF), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
}

Test(rtm_init, default_is_off)
{
    stm_config cfg;
    stm_config_init(&cfg);
    CHECK_EQ(cfg.rtm, STM_RTM_OFF);
    CHECK_EQ(rtm_init("emulate", NULL, cfg.rtm), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
    CHECK_WHY("off: disabled");
}

Test(rtm_init, environment_overrides_config)
{
    CHECK_EQ(rtm_init("emulate", "auto", STM_RTM_OFF), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 1);
    CHECK_WHY("on: emulated");
}

Test(rtm_init, bad_spellings_are_errors)
{
    CHECK_EQ(rtm_init("emulate", "yes", STM_RTM_AUTO), STM_EINVAL);
    CHECK_WHY("STM_RTM");
    CHECK_EQ(rtm_init("emulate", NULL, 7), STM_EINVAL);
    CHECK_EQ(rtm_init("emulate", NULL, -1), STM_EINVAL);
    CHECK_EQ(rtm_init("htm", NULL, STM_RTM_AUTO), STM_EINVAL);
    CHECK_WHY("STM_RTM_BACKEND");
    /* The library is still usable after a refused configuration. */
    CHECK_EQ(rtm_init("emulate", "off", STM_RTM_AUTO), STM_OK);
}

static void check_hidden_cpu(const stm_rtm_cpuid *fake, const char *reason)
{
    stm_test_rtm_fake_cpuid(fake);
    /* on: a clear error, and the reason is available. */
    CHECK_EQ(rtm_init("hw", "on", STM_RTM_AUTO), STM_ENOTSUP);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
    CHECK_WHY(reason);
    /* auto: fine, without elision. */
    CHECK_EQ(rtm_init("hw", "auto", STM_RTM_AUTO), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
    CHECK_WHY(reason);
    stm_test_rtm_fake_cpuid(NULL);
    /* Everything works as without elision. */
    node *n;
    TX_BEGIN();
    n = ts_new_node(5, NULL, NULL);
    TX_COMMIT();
    stm_stats s = ts_stats();
    CHECK_EQ(s.rtm_elided + s.rtm_fallbacks, 0);
    (void)n;
}

Test(rtm_init, on_without_rtm_is_enotsup)
{
    stm_rtm_cpuid none = { .max_leaf = 7, .intel = true, .leaf1_eax = leaf1(0xa7, 1) };
    check_hidden_cpu(&none, "does not offer RTM");
}

Test(rtm_init, always_abort_cpu_is_off)
{
    stm_rtm_cpuid aa = { .max_leaf = 7, .intel = true, .leaf1_eax = leaf1(0xa7, 1),
                         .leaf7_ebx = 1u << 11, .leaf7_edx = 1u << 11 };
    check_hidden_cpu(&aa, "always aborts");
}

Test(rtm_init, denylisted_cpu_is_off)
{
    stm_rtm_cpuid hsw = { .max_leaf = 13, .intel = true, .leaf1_eax = leaf1(0x3c, 3),
                          .leaf7_ebx = 1u << 11 };
    check_hidden_cpu(&hsw, "errata");
}

Test(rtm_init, self_test_failure_disables)
{
    /* A backend on which no transaction ever commits, as a hypervisor
     * that advertises RTM and aborts everything. */
    stm_test_rtm_script(NULL, 0, STM_TEST_RTM_THEN_ABORT);
    CHECK_EQ(rtm_init("script", "on", STM_RTM_AUTO), STM_ENOTSUP);
    CHECK_WHY("self-test");
    CHECK_EQ(stm_test_rtm_script_used(), 64);
    stm_test_rtm_script(NULL, 0, STM_TEST_RTM_THEN_ABORT);
    CHECK_EQ(rtm_init("script", NULL, STM_RTM_AUTO), STM_OK);
    CHECK_EQ(stm_rtm_enabled(NULL), 0);
    CHECK_WHY("self-test");
}

Test(rtm_init, self_test_needs_one_commit)
{
    const unsigned codes[] = { 0, STM_XABORT_CAPACITY, STM_XBEGIN_STARTED };
    stm_test_rtm_script(codes, 3, STM_TEST_RTM_THEN_ABORT);
    CHECK_EQ(rtm_init("script", "on", STM_RTM_AUTO), STM_OK);
    CHECK_EQ(stm_test_rtm_script_used(), 3);   /* it stops at the first commit */
    CHECK_EQ(stm_rtm_enabled(NULL), 1);
    CHECK_WHY("on: scripted");
}

Test(rtm_init, real_cpu_agrees_with_cpuid)
{
    stm_rtm_cpuid c;
    bool have = false;
#if STM_ARCH_HAS_RTM
    have = stm_arch_read_cpuid(&c) && stm_rtm_cpu_verdict(&c) == STM_RTM_CPU_PRESENT;
#endif
    (void)c;
    int r = rtm_init("hw", "on", STM_RTM_AUTO);
    if (!have) {
        CHECK_EQ(r, STM_ENOTSUP);
        CHECK_WHY("off: ");
    } else {
        /* Present: on succeeds unless the self-test saw only aborts. */
        CHECK(r == STM_OK || (r == STM_ENOTSUP && strstr(why_now(), "self-test")),
              "stm_init returned %d (%s)", r, why_now());
        if (r == STM_OK) {
            CHECK_EQ(stm_rtm_enabled(NULL), 1);
            CHECK_WHY("on: hardware");
        }
    }
}

/* ---- the retry policy, by scripted statuses ------------------------------- */

/* The documented policy (docs/DESIGN.md, "Lock elision"; stm/rtm.h). */
#define MAX_RETRIES 3   /* transient aborts retried per acquisition */
#define MAX_BUSY 8      /* lock-held aborts waited out per acquisition */

TestSuite(rtm_policy, .fini = ts_teardown, .timeout = 60);

typedef struct section_log {
    int runs;
    int elided;     /* the body ran inside an (emulated) transaction */
} section_log;

static void body(void *arg)
{
    section_log *log = arg;
    log->runs++;
    log->elided += stm_test_in_elided_section();
}

typedef struct outcome {
    size_t begins;
    int runs, elided;
    stm_stats d;    /* deltas */
} outcome;

/* One critical section of our own lock, with this script, then status 0. */
static outcome run_script(const unsigned *codes, size_t n)
{
    cr_assert_eq(rtm_init("script", NULL, STM_RTM_AUTO), STM_OK);
    cr_assert_eq(stm_rtm_enabled(NULL), 1);
    stm_stats before = ts_stats();
    stm_test_rtm_script(codes, n, STM_TEST_RTM_THEN_ABORT);
    section_log log = { 0, 0 };
    stm_test_elided_section(stm_test_thread_index(), body, &log);
    stm_stats after = ts_stats();
    outcome o = { stm_test_rtm_script_used(), log.runs, log.elided, after };
    uint64_t *d = &o.d.commits;
    const uint64_t *b = &before.commits;
    for (unsigned i = 0; stm_stats_field_name(i); i++)
        d[i] -= b[i];
    CHECK_EQ(o.runs, 1);   /* emulated or real lock: the body runs once */
    CHECK_EQ(o.d.rtm_elided + o.d.rtm_fallbacks, 1);
    CHECK_EQ(o.elided, (int)o.d.rtm_elided);
    return o;
}

#define S(...) ((const unsigned[]){ __VA_ARGS__ }), \
               sizeof((const unsigned[]){ __VA_ARGS__ }) / sizeof(unsigned)

static uint64_t total_aborts(const stm_stats *d)
{
    return d->rtm_abort_busy + d->rtm_abort_conflict + d->rtm_abort_retry +
           d->rtm_abort_capacity + d->rtm_abort_debug + d->rtm_abort_nested +
           d->rtm_abort_explicit + d->rtm_abort_unknown;
}

Test(rtm_policy, started_at_once)
{
    outcome o = run_script(S(STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 1);
    CHECK_EQ(o.d.rtm_elided, 1);
    CHECK_EQ(total_aborts(&o.d), 0);
}

Test(rtm_policy, retry_bit_then_success)
{
    outcome o = run_script(S(STM_XABORT_RETRY, STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 2);
    CHECK_EQ(o.d.rtm_elided, 1);
    CHECK_EQ(o.d.rtm_abort_retry, 1);
    CHECK_EQ(total_aborts(&o.d), 1);
}

Test(rtm_policy, three_transient_aborts_are_retried)
{
    outcome o = run_script(S(STM_XABORT_CONFLICT | STM_XABORT_RETRY, STM_XABORT_RETRY,
                             STM_XABORT_CONFLICT, STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 4);
    CHECK_EQ(o.d.rtm_elided, 1);
    CHECK_EQ(o.d.rtm_abort_conflict, 2);
    CHECK_EQ(o.d.rtm_abort_retry, 1);
}

Test(rtm_policy, conflicts_are_bounded)
{
    outcome o = run_script(S(STM_XABORT_CONFLICT, STM_XABORT_CONFLICT, STM_XABORT_CONFLICT,
                             STM_XABORT_CONFLICT, STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 1 + MAX_RETRIES);
    CHECK_EQ(o.d.rtm_fallbacks, 1);
    CHECK_EQ(o.d.rtm_elided, 0);
    CHECK_EQ(o.d.rtm_abort_conflict, 4);
}

static void check_immediate_fallback(unsigned status, size_t field_offset)
{
    outcome o = run_script(S(status, STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 1);
    CHECK_EQ(o.d.rtm_fallbacks, 1);
    CHECK_EQ(o.d.rtm_elided, 0);
    CHECK_EQ(total_aborts(&o.d), 1);
    CHECK_EQ(*(const uint64_t *)((const char *)&o.d + field_offset), 1);
}

Test(rtm_policy, capacity_falls_back_at_once)
{
    check_immediate_fallback(STM_XABORT_CAPACITY | STM_XABORT_RETRY,
                             offsetof(stm_stats, rtm_abort_capacity));
}

Test(rtm_policy, debug_falls_back_at_once)
{
    check_immediate_fallback(STM_XABORT_DEBUG, offsetof(stm_stats, rtm_abort_debug));
}

Test(rtm_policy, nested_falls_back_at_once)
{
    check_immediate_fallback(STM_XABORT_NESTED | STM_XABORT_CONFLICT,
                             offsetof(stm_stats, rtm_abort_nested));
}

Test(rtm_policy, unknown_status_falls_back_at_once)
{
    /* Status 0: what every XBEGIN returns where TSX is disabled. */
    check_immediate_fallback(0, offsetof(stm_stats, rtm_abort_unknown));
}

Test(rtm_policy, other_explicit_falls_back_at_once)
{
    check_immediate_fallback(STM_XABORT_STATUS(0x12), offsetof(stm_stats, rtm_abort_explicit));
}

Test(rtm_policy, busy_does_not_use_the_transient_budget)
{
    const unsigned busy = STM_XABORT_STATUS(STM_XCODE_BUSY);
    outcome o = run_script(S(STM_XABORT_CONFLICT, STM_XABORT_CONFLICT, STM_XABORT_CONFLICT, busy,
                             busy, STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, 6);
    CHECK_EQ(o.d.rtm_elided, 1);
    CHECK_EQ(o.d.rtm_abort_busy, 2);
}

Test(rtm_policy, busy_retries_are_bounded)
{
    const unsigned busy = STM_XABORT_STATUS(STM_XCODE_BUSY);
    outcome o = run_script(S(busy, busy, busy, busy, busy, busy, busy, busy, busy,
                             STM_XBEGIN_STARTED));
    CHECK_EQ(o.begins, MAX_BUSY + 1);
    CHECK_EQ(o.d.rtm_abort_busy, MAX_BUSY + 1);
    CHECK_EQ(o.d.rtm_fallbacks, 1);
}

/* The lemming test: B holds A's lock; A's first (emulated) attempt finds
 * it held, A must then wait until B releases it and elide on the next
 * attempt, instead of retrying into the held lock or taking it. */
typedef struct held_ctx {
    unsigned a_index;
    volatile int released;
    int saw_released;
    size_t begins;
} held_ctx;

static void a_body(void *arg)
{
    held_ctx *cx = arg;
    cx->saw_released = __atomic_load_n(&cx->released, __ATOMIC_ACQUIRE);
}

static void a_side(void *arg)
{
    held_ctx *cx = arg;
    cx->a_index = stm_test_thread_index();
    const unsigned codes[] = { STM_XBEGIN_STARTED, STM_XBEGIN_STARTED };
    stm_test_rtm_script(codes, 2, STM_TEST_RTM_THEN_ABORT);
    ls_set(1);
    ls_wait(2);   /* B holds our lock */
    stm_test_elided_section(cx->a_index, a_body, cx);
    cx->begins = stm_test_rtm_script_used();
}

static void b_side(void *arg)
{
    held_ctx *cx = arg;
    ls_wait(1);
    stm_test_hold_lock(cx->a_index, 1);
    stm_stats before = ts_stats();
    ls_set(2);
    /* Release only once A has seen the lock held. */
    for (;;) {
        stm_stats now = ts_stats();
        if (now.rtm_abort_busy > before.rtm_abort_busy)
            break;
        sched_yield();
    }
    __atomic_store_n(&cx->released, 1, __ATOMIC_RELEASE);
    stm_test_hold_lock(cx->a_index, 0);
}

Test(rtm_policy, lock_held_abort_waits_for_the_lock)
{
    cr_assert_eq(rtm_init("script", NULL, STM_RTM_AUTO), STM_OK);
    held_ctx cx = { 0 };
    stm_stats before = ts_stats();
    two_threads(a_side, b_side, &cx);
    stm_stats after = ts_stats();
    CHECK_EQ(cx.saw_released, 1);
    /* Exactly one lock-held abort, then one begin that elided: no retry
     * while the lock was held, no fallback to the lock. */
    CHECK_EQ(cx.begins, 2);
    CHECK_EQ(DELTA(after, before, rtm_abort_busy), 1);
    CHECK_EQ(DELTA(after, before, rtm_elided), 1);
    CHECK_EQ(DELTA(after, before, rtm_fallbacks), 0);
}

/* ---- fatal errors inside a section ----------------------------------------- */

static void fatal_body(void *arg)
{
    (void)arg;
    /* Thread 0 never exists: a fatal error inside the section. */
    EXPECT_FATAL("no thread 0", stm_test_hold_lock(0, 1));
    CHECK_EQ(stm_test_in_elided_section(), 0);
}

static void check_fatal_in_section(const char *backend)
{
    if (rtm_init(backend, "on", STM_RTM_AUTO) != STM_OK)
        return;   /* hw on a CPU without RTM: nothing to test */
    unsigned me = stm_test_thread_index();
    stm_stats before = ts_stats();
    stm_test_elided_section(me, fatal_body, NULL);
    /* The handler ran once, outside any hardware transaction, and the
     * library is usable: another section and a transaction run. */
    CHECK_EQ(ts_fatal_count(), 1);
    stm_stats mid = ts_stats();
    if (!strcmp(backend, "hw"))   /* the error aborted the hardware attempt */
        CHECK(DELTA(mid, before, rtm_fallbacks) == 1, "the fatal section did not fall back");
    section_log log = { 0, 0 };
    stm_test_elided_section(me, body, &log);
    CHECK_EQ(log.runs, 1);
    TX_BEGIN();
    (void)WR(ts_new_node(1, NULL, NULL));
    TX_COMMIT();
    stm_stats after = ts_stats();
    CHECK_EQ(DELTA(after, mid, rtm_elided) + DELTA(after, mid, rtm_fallbacks), 1);
}

Test(rtm_policy, fatal_in_emulated_section)
{
    check_fatal_in_section("emulate");
}

Test(rtm_policy, fatal_in_hardware_section)
{
    check_fatal_in_section("hw");
}

/* ---- two threads: results are the same whatever the backend ---------------- */

TS_PREBUILT_NODE(g_a);
TS_PREBUILT_NODE(g_b);

#define ROUNDS 3000

/* Our own object is the top root of the thread (pushed outside). */
static node *my_node(void)
{
    return *stm_root_slot(stm_root_depth() - 1);
}

static int tx_transfer(void *arg)
{
    (void)arg;
    WR(&g_a)->value += 1;       /* shared commit; the other thread steals */
    WR(&g_b)->value -= 1;
    WR(my_node())->value += 1;  /* a protected object written in place */
    return STM_DONE;
}

static int tx_make_mine(void *arg)
{
    *(node **)arg = ts_new_node(0, NULL, NULL);
    return STM_DONE;
}

static void worker(void *arg)
{
    (void)arg;
    node *mine = NULL;
    ts_run(tx_make_mine, &mine);
    stm_push_root(mine);
    for (int i = 0; i < ROUNDS; i++)
        ts_run(tx_transfer, NULL);
    TX_BEGIN();
    CHECK_EQ(RD(my_node())->value, ROUNDS);
    TX_COMMIT();
    (void)stm_pop_root();
}

/* must_elide: 1 elision must happen, 0 it must not be tried, -1 either
 * (hardware: whatever stm_init decided). */
static void two_thread_bank(const char *backend, int must_elide)
{
    if (rtm_init(backend, NULL, STM_RTM_AUTO) != STM_OK)
        cr_assert_fail("stm_init failed");
    if (must_elide < 0)
        must_elide = stm_rtm_enabled(NULL);
    ts_register_prebuilt(&g_a, 0);
    ts_register_prebuilt(&g_b, 0);
    stm_stats before = ts_stats();
    two_threads(worker, worker, NULL);
    TX_BEGIN();
    CHECK_EQ(RD(&g_a)->value, 2 * ROUNDS);
    CHECK_EQ(RD(&g_b)->value, -2 * ROUNDS);
    TX_COMMIT();
    stm_stats after = ts_stats();
    CHECK(DELTA(after, before, steals) > 0, "no steals: the test lost its point");
    CHECK(DELTA(after, before, backups_made) >= 2 * ROUNDS, "too few in-place writes");
    long long tried = DELTA(after, before, rtm_elided) + DELTA(after, before, rtm_fallbacks);
    if (must_elide)
        CHECK(tried > 0, "nothing went through elision (%s)", why_now());
    else
        CHECK_EQ(tried, 0);
}

Test(rtm_threads, emulated)
{
    two_thread_bank("emulate", 1);
}

Test(rtm_threads, scripted_mixed_aborts)
{
    /* The built-in cycle: every abort cause, interleaved with emulated
     * transactions. */
    two_thread_bank("script", 1);
    stm_stats s = ts_stats();
    CHECK(s.rtm_fallbacks > 0 && s.rtm_abort_capacity > 0 && s.rtm_abort_conflict > 0,
          "the cycle did not exercise the fallbacks");
}

Test(rtm_threads, hardware_or_off)
{
    /* With RTM: elided or fallen back, never wrong.  Without: untouched. */
    two_thread_bank("hw", -1);
}

Test(rtm_threads, off_is_untouched)
{
    cr_assert_eq(setenv("STM_RTM", "off", 1), 0);
    stm_set_fatal_handler(ts_fatal_handler);
    cr_assert_eq(setenv("STM_RTM_BACKEND", "emulate", 1), 0);
    stm_config cfg;
    ts_config(&cfg, NULL);
    cr_assert_eq(stm_init(&cfg), STM_OK);
    cr_assert_eq(stm_thread_attach(), STM_OK);
    ts_register_prebuilt(&g_a, 0);
    ts_register_prebuilt(&g_b, 0);
    two_threads(worker, worker, NULL);
    stm_stats s = ts_stats();
    CHECK_EQ(s.rtm_elided + s.rtm_fallbacks + s.rtm_abort_busy, 0);
}
#endif
