/* stm_testing_rtm.h -- test-only entry points for lock elision (stm/rtm.c),
 * compiled into the library only with STM_TESTING, like stm_testing.h.
 *
 * The backend is chosen at stm_init by STM_RTM_BACKEND=hw|script|emulate
 * (default hw); set it with setenv before stm_init.  The abort-status
 * constants and the pure detection and classification functions come from
 * stm/arch_rtm.h, which the tests include directly. */
#ifndef STM_TESTING_RTM_H
#define STM_TESTING_RTM_H

#include <stddef.h>

#include "stm/arch_rtm.h"

/* What a scripted begin returns once the script is used up. */
enum {
    STM_TEST_RTM_THEN_ABORT = 0,    /* status 0, as with TSX disabled */
    STM_TEST_RTM_THEN_EMULATE = 1,  /* STARTED: emulated transactions */
    STM_TEST_RTM_THEN_CYCLE = 2,    /* the built-in mixed cycle (the default) */
};

/* SCRIPT backend: the calling thread's next begins return codes[0..n-1]
 * (STM_XBEGIN_STARTED starts an emulated transaction), then `then`.
 * At most 256 codes.  Resets the count below. */
void stm_test_rtm_script(const unsigned *codes, size_t n, int then);
/* Begins the calling thread made through the script since it was set. */
size_t stm_test_rtm_script_used(void);

/* Makes detection at the next stm_init see these CPUID values instead of
 * the CPU's (NULL: the CPU's).  It can only hide RTM: a fake that claims
 * RTM on a CPU without it is ignored, since XBEGIN would fault. */
void stm_test_rtm_fake_cpuid(const stm_rtm_cpuid *regs);

/* Runs fn(arg) as a critical section of thread `owner_index`'s collection
 * lock, taken through the elision path exactly as the library's sites do.
 * With the hw backend fn runs inside a hardware transaction: no system
 * calls or output, and it may run again if an attempt aborts. */
void stm_test_elided_section(unsigned owner_index, void (*fn)(void *), void *arg);
/* Takes (hold != 0) or releases thread `owner_index`'s collection lock
 * for real, as a thief or a minor collection would. */
void stm_test_hold_lock(unsigned owner_index, int hold);
/* Nonzero while the calling thread is in an elided critical section. */
int stm_test_in_elided_section(void);

#endif
