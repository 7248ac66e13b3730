/* rtm.c -- lock elision with Intel RTM: detection, the backends, the retry
 * policy (docs/DESIGN.md 12, "Lock elision").
 *
 * Every use of a hardware transaction goes through rtm_begin,
 * rtm_subscribe and rtm_end below, which dispatch to one backend:
 *   HW       XBEGIN / read the lock word, XABORT if held / XEND;
 *   EMULATE  (testing builds) begin takes one global lock; the
 *            subscription takes the elided lock word itself by CAS, and a
 *            failed CAS is the emulated XABORT, which releases the global
 *            lock and reports a lock-held abort; end releases both;
 *   SCRIPT   (testing builds) begin returns the next status of the
 *            calling thread's script; a scripted STARTED begins an
 *            emulated transaction.
 * The emulation cannot undo writes, so it can "abort" only at the
 * subscription, before the critical section has written anything
 * (stm/elide.h states that invariant for the sites). */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "stm/elide.h"

#ifdef STM_TESTING
#include "tests/support/stm_testing_rtm.h"
#endif

int stm_rtm_elide;
__thread int stm_elide_active;

static stm_rtm_backend backend = STM_RTM_BACKEND_HW;
static const char *state_text = "off: stm_init has not run";

/* Statistics field of each abort cause. */
static const int cause_stat[STM_RTM_CAUSE_COUNT] = {
    [STM_RTM_CAUSE_BUSY] = STAT_rtm_abort_busy,
    [STM_RTM_CAUSE_EXPLICIT] = STAT_rtm_abort_explicit,
    [STM_RTM_CAUSE_CAPACITY] = STAT_rtm_abort_capacity,
    [STM_RTM_CAUSE_DEBUG] = STAT_rtm_abort_debug,
    [STM_RTM_CAUSE_NESTED] = STAT_rtm_abort_nested,
    [STM_RTM_CAUSE_CONFLICT] = STAT_rtm_abort_conflict,
    [STM_RTM_CAUSE_RETRY] = STAT_rtm_abort_retry,
    [STM_RTM_CAUSE_UNKNOWN] = STAT_rtm_abort_unknown,
};

static void count(int which)
{
    stm_thread *me = stm_me;
    if (me)
        stm_stat(me, which, 1);
}

/* ---------------------------------------------------------------------- */
/* HW backend                                                              */
/* ---------------------------------------------------------------------- */

#if STM_ARCH_HAS_RTM
/* The transaction begun here outlives this function: an abort restores
 * the registers and memory of the moment of XBEGIN, this frame included,
 * and returns here again with the status (glibc's elided mutexes work the
 * same way). */
STM_RTM_TARGET __attribute__((noinline)) static unsigned hw_begin(void)
{
    return stm_arch_xbegin();
}

STM_RTM_TARGET __attribute__((noinline)) static bool hw_subscribe(int *lock)
{
    /* Reading the lock word puts it in the transaction's read set: a
     * thread that takes the lock for real writes it, which aborts us.
     * Relaxed: a committed transaction is ordered like a locked
     * instruction; nothing else is needed. */
    if (stm_load_relaxed(lock) != 0)
        stm_arch_xabort(STM_XCODE_BUSY);
    return true;
}

STM_RTM_TARGET __attribute__((noinline)) static void hw_end(void)
{
    stm_arch_xend();
}

STM_RTM_TARGET __attribute__((noinline)) static void hw_abort_if_inside(void)
{
    if (stm_arch_xtest())
        stm_arch_xabort(STM_XCODE_FATAL);
}
#endif

/* ---------------------------------------------------------------------- */
/* EMULATE and SCRIPT backends (testing builds)                            */
/* ---------------------------------------------------------------------- */

#ifdef STM_TESTING
static int emu_global;            /* 0 free, 1: an emulated transaction runs */
static __thread int emu_in;       /* this thread holds emu_global */

static unsigned emu_begin(void)
{
    unsigned spins = 0;
    for (;;) {
        int expected = 0;
        /* Acquire: pairs with the release in emu_leave, so the previous
         * emulated transaction's writes are visible. */
        if (stm_cas_acquire(&emu_global, &expected, 1))
            break;
        while (stm_load_relaxed(&emu_global)) {
            if (++spins < 256)
                stm_cpu_relax();
            else
                sched_yield();
        }
    }
    emu_in = 1;
    return STM_XBEGIN_STARTED;
}

static void emu_leave(void)
{
    emu_in = 0;
    /* Release: pairs with the acquire CAS in emu_begin. */
    stm_store_release(&emu_global, 0);
}

static bool emu_subscribe(int *lock)
{
    int expected = 0;
    /* Acquire: pairs with the release in stm_unlock and emu_end, as when
     * taking the lock: the previous holder's writes are visible. */
    if (stm_cas_acquire(lock, &expected, 1))
        return true;
    emu_leave();    /* the emulated XABORT: nothing was written yet */
    return false;
}

static void emu_end(int *lock)
{
    if (lock) {
        /* Release: pairs with the acquire CAS in stm_trylock and
         * emu_subscribe, like stm_unlock. */
        stm_store_release(lock, 0);
    }
    emu_leave();
}

/* A thread that never set a script cycles through this one (the whole
 * suite run with STM_RTM_BACKEND=script): every cause, retries that
 * succeed and retries that run out, and emulated transactions. */
static const unsigned default_cycle[] = {
    STM_XABORT_RETRY | STM_XABORT_CONFLICT, STM_XBEGIN_STARTED,
    STM_XABORT_CAPACITY | STM_XABORT_RETRY, STM_XBEGIN_STARTED,
    0, STM_XBEGIN_STARTED,
    STM_XABORT_CONFLICT, STM_XABORT_RETRY, STM_XBEGIN_STARTED,
    STM_XABORT_STATUS(STM_XCODE_BUSY), STM_XBEGIN_STARTED,
    STM_XABORT_DEBUG, STM_XABORT_NESTED | STM_XABORT_CONFLICT, STM_XBEGIN_STARTED,
    STM_XABORT_CONFLICT, STM_XABORT_CONFLICT, STM_XABORT_CONFLICT, STM_XABORT_CONFLICT,
    STM_XABORT_STATUS(0x12), STM_XBEGIN_STARTED, STM_XBEGIN_STARTED,
};
#define DEFAULT_CYCLE_LEN (sizeof default_cycle / sizeof *default_cycle)

#define SCRIPT_MAX 256
static __thread unsigned script_codes[SCRIPT_MAX];
static __thread size_t script_len, script_pos, script_used, cycle_pos;
static __thread int script_then = STM_TEST_RTM_THEN_CYCLE;

static unsigned script_begin(void)
{
    script_used++;
    unsigned s;
    if (script_pos < script_len)
        s = script_codes[script_pos++];
    else if (script_then == STM_TEST_RTM_THEN_EMULATE)
        s = STM_XBEGIN_STARTED;
    else if (script_then == STM_TEST_RTM_THEN_CYCLE)
        s = default_cycle[cycle_pos++ % DEFAULT_CYCLE_LEN];
    else
        s = 0;    /* as XBEGIN on a machine with TSX disabled */
    return s == STM_XBEGIN_STARTED ? emu_begin() : s;
}
#endif

/* ---------------------------------------------------------------------- */
/* The interface                                                           */
/* ---------------------------------------------------------------------- */

static unsigned rtm_begin(void)
{
    switch (backend) {
#ifdef STM_TESTING
    case STM_RTM_BACKEND_EMULATE:
        return emu_begin();
    case STM_RTM_BACKEND_SCRIPT:
        return script_begin();
#endif
#if STM_ARCH_HAS_RTM
    case STM_RTM_BACKEND_HW:
        return hw_begin();
#endif
    default:
        return 0;   /* no backend: an abort without cause, never reached */
    }
}

/* True if `lock` is free and the section may run; false (emulation only:
 * the hardware aborts instead of returning) if it is held. */
static bool rtm_subscribe(int *lock)
{
#if STM_ARCH_HAS_RTM
    if (backend == STM_RTM_BACKEND_HW)
        return hw_subscribe(lock);
#endif
#ifdef STM_TESTING
    return emu_subscribe(lock);
#else
    (void)lock;
    return false;
#endif
}

static void rtm_end(int *lock)
{
#if STM_ARCH_HAS_RTM
    if (backend == STM_RTM_BACKEND_HW) {
        (void)lock;
        hw_end();
        return;
    }
#endif
#ifdef STM_TESTING
    emu_end(lock);
#else
    (void)lock;
#endif
}

/* ---------------------------------------------------------------------- */
/* The retry policy                                                        */
/* ---------------------------------------------------------------------- */

/* After a lock-held abort: wait until the lock is free before trying
 * again, without taking it (no lemming effect: a retry while the holder
 * runs would only abort again, and falling back would queue us behind
 * it and keep every later section on the lock too). */
static void wait_until_free(const int *lock)
{
    unsigned spins = 0;
    /* Relaxed: only a hint; the subscription or stm_lock orders. */
    while (stm_load_relaxed(lock)) {
        if (++spins < 256)
            stm_cpu_relax();
        else
            sched_yield();
    }
}

void stm_elide_lock_slow(stm_thread *owner)
{
    STM_ASSERT(!stm_elide_active);   /* sections do not nest */
    unsigned transient = 0, busy = 0;
    for (;;) {
        unsigned status = rtm_begin();
        if (status == STM_XBEGIN_STARTED) {
            /* Subscribe first, before the section writes anything. */
            if (rtm_subscribe(&owner->lock)) {
                stm_elide_active = 1;
                return;
            }
            status = STM_XABORT_STATUS(STM_XCODE_BUSY);   /* the emulated XABORT */
        }
        stm_rtm_cause cause = stm_rtm_classify(status);
        count(cause_stat[cause]);
        if (cause == STM_RTM_CAUSE_BUSY) {
            if (++busy > STM_ELIDE_MAX_BUSY)
                break;
            wait_until_free(&owner->lock);
            continue;
        }
        if ((cause == STM_RTM_CAUSE_CONFLICT || cause == STM_RTM_CAUSE_RETRY) &&
            ++transient <= STM_ELIDE_MAX_RETRIES)
            continue;
        break;   /* persistent, or out of retries */
    }
    count(STAT_rtm_fallbacks);
    stm_lock(owner);
}

void stm_elide_unlock_slow(stm_thread *owner)
{
    stm_elide_active = 0;   /* in hardware: part of the transaction */
    rtm_end(&owner->lock);
    count(STAT_rtm_elided);
}

void stm_elide_on_fatal(void)
{
    if (!stm_elide_active)
        return;
#if STM_ARCH_HAS_RTM
    if (backend == STM_RTM_BACKEND_HW) {
        hw_abort_if_inside();   /* does not return inside a transaction */
        return;
    }
#endif
#ifdef STM_TESTING
    /* Emulated: keep the lock word (held, as a real lock would be) and
     * let the other emulated sections go on. */
    stm_elide_active = 0;
    if (emu_in)
        emu_leave();
#endif
}

/* ---------------------------------------------------------------------- */
/* Detection and start-up                                                  */
/* ---------------------------------------------------------------------- */

#ifdef STM_TESTING
static bool fake_cpuid_set;
static stm_rtm_cpuid fake_cpuid;
#endif

#if defined(__SANITIZE_THREAD__)
#define RTM_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RTM_UNDER_TSAN 1
#endif
#endif

/* NULL if the hardware may be used, else why not. */
static const char *hw_unusable(void)
{
#if !STM_ARCH_HAS_RTM
    return "off: RTM exists only on x86";
#else
#ifdef RTM_UNDER_TSAN
    /* It would report every elided section as a data race. */
    return "off: ThreadSanitizer cannot see hardware transactions";
#endif
    stm_rtm_cpuid c;
    if (!stm_arch_read_cpuid(&c))
        return "off: the CPU has no CPUID";
    stm_rtm_verdict real = stm_rtm_cpu_verdict(&c);
    stm_rtm_verdict v = real;
#ifdef STM_TESTING
    if (fake_cpuid_set) {
        v = stm_rtm_cpu_verdict(&fake_cpuid);
        if (v == STM_RTM_CPU_PRESENT && real != STM_RTM_CPU_PRESENT)
            v = real;   /* XBEGIN would raise #UD: the fake may only hide RTM */
    }
#endif
    switch (v) {
    case STM_RTM_CPU_ABSENT:
        return "off: the CPU does not offer RTM";
    case STM_RTM_CPU_ALWAYS_ABORT:
        return "off: RTM always aborts on this CPU (TSX disabled by microcode)";
    case STM_RTM_CPU_DENYLISTED:
        return "off: RTM is unreliable on this CPU model (TSX errata)";
    case STM_RTM_CPU_PRESENT:
        break;
    }
    return NULL;
#endif
}

/* A hypervisor may advertise RTM and abort every transaction: elide only
 * if at least one of a few empty transactions commits. */
#define SELF_TEST_TRIES 64
static bool self_test(void)
{
    for (int i = 0; i < SELF_TEST_TRIES; i++) {
        if (rtm_begin() == STM_XBEGIN_STARTED) {
            rtm_end(NULL);
            return true;
        }
    }
    return false;
}

/* "auto", "on", "off" -> mode; -1 for anything else. */
static int parse_mode(const char *s)
{
    if (!strcmp(s, "auto"))
        return STM_RTM_AUTO;
    if (!strcmp(s, "on"))
        return STM_RTM_ON;
    if (!strcmp(s, "off"))
        return STM_RTM_OFF;
    return -1;
}

int stm_rtm_init(int mode)
{
    stm_rtm_elide = 0;
    backend = STM_RTM_BACKEND_HW;
    if (mode != STM_RTM_AUTO && mode != STM_RTM_ON && mode != STM_RTM_OFF)
        return STM_EINVAL;
    const char *env = secure_getenv("STM_RTM");
    if (env && *env && (mode = parse_mode(env)) < 0) {
        state_text = "off: STM_RTM is not auto, on or off";
        return STM_EINVAL;
    }
#ifdef STM_TESTING
    const char *be = secure_getenv("STM_RTM_BACKEND");
    if (be && *be) {
        if (!strcmp(be, "script"))
            backend = STM_RTM_BACKEND_SCRIPT;
        else if (!strcmp(be, "emulate"))
            backend = STM_RTM_BACKEND_EMULATE;
        else if (strcmp(be, "hw") != 0) {
            state_text = "off: STM_RTM_BACKEND is not hw, script or emulate";
            return STM_EINVAL;
        }
    }
#endif
    if (mode == STM_RTM_OFF) {
        state_text = "off: disabled (the default; STM_RTM=auto or stm_config.rtm enables)";
        return STM_OK;
    }
    const char *why = backend == STM_RTM_BACKEND_HW ? hw_unusable() : NULL;
    if (!why && !self_test())
        why = "off: the start-up self-test committed none of 64 transactions";
    if (why) {
        state_text = why;
        return mode == STM_RTM_ON ? STM_ENOTSUP : STM_OK;
    }
    state_text = backend == STM_RTM_BACKEND_HW        ? "on: hardware (RTM)"
                 : backend == STM_RTM_BACKEND_EMULATE ? "on: emulated (STM_RTM_BACKEND=emulate)"
                                                      : "on: scripted (STM_RTM_BACKEND=script)";
    stm_rtm_elide = 1;
    return STM_OK;
}

STM_API int stm_rtm_enabled(const char **why)
{
    if (why)
        *why = state_text;
    return stm_load_relaxed(&stm_rtm_elide);
}

/* ---------------------------------------------------------------------- */
/* Test entry points (tests/support/stm_testing_rtm.h)                     */
/* ---------------------------------------------------------------------- */

#ifdef STM_TESTING
STM_API void stm_test_rtm_script(const unsigned *codes, size_t n, int then)
{
    if (n > SCRIPT_MAX)
        stm_fatal("stm_test_rtm_script: %zu codes, at most %d", n, SCRIPT_MAX);
    if (n)
        memcpy(script_codes, codes, n * sizeof *codes);
    script_len = n;
    script_pos = 0;
    script_used = 0;
    script_then = then;
}

STM_API size_t stm_test_rtm_script_used(void) { return script_used; }

STM_API void stm_test_rtm_fake_cpuid(const stm_rtm_cpuid *regs)
{
    fake_cpuid_set = regs != NULL;
    if (regs)
        fake_cpuid = *regs;
}

STM_API void stm_test_elided_section(unsigned owner_index, void (*fn)(void *), void *arg)
{
    stm_thread *owner = stm_thread_by_index(owner_index);
    if (!owner)
        stm_fatal("stm_test_elided_section: no thread %u", owner_index);
    stm_elide_lock(owner);
    fn(arg);
    stm_elide_unlock(owner);
}

STM_API void stm_test_hold_lock(unsigned owner_index, int hold)
{
    stm_thread *owner = stm_thread_by_index(owner_index);
    if (!owner)
        stm_fatal("stm_test_hold_lock: no thread %u", owner_index);
    if (hold)
        stm_lock(owner);
    else
        stm_unlock(owner);
}

STM_API int stm_test_in_elided_section(void) { return stm_elide_active; }
#endif
