/* elide.h -- the collection lock, elided with RTM when stm_init enabled
 * it (docs/DESIGN.md 12, "Lock elision").  A site replaces stm_lock(owner)
 * by stm_elide_lock(owner) (stm_elide_lock_hooked(owner, point) if a test
 * hook point lies inside) and every stm_unlock(owner) that ends that
 * critical section by stm_elide_unlock(owner).
 *
 * An elided critical section must:
 *   - not wait for another thread's progress (a spin on a word another
 *     thread will write is allowed: in hardware the write aborts us, and
 *     the emulation serialises sections, so the writer is not in one);
 *   - end (stm_elide_unlock) before anything that aborts the STM
 *     transaction or takes another collection lock: no nesting;
 *   - write nothing before the lock is known free: the subscription in
 *     stm_elide_lock is the only place a section can be rolled back by
 *     the emulation, which cannot undo writes.
 * With elision off, each helper costs one load and one branch over
 * stm_lock/stm_unlock. */
#ifndef STM_ELIDE_H
#define STM_ELIDE_H

#include "stm/rtm.h"

/* Test hooks block on other threads, which a hardware transaction cannot
 * do: a section that reaches a hook point takes the lock when the calling
 * thread has installed that hook (stm_elide_lock_hooked). */
static inline void stm_elide_lock_(stm_thread *owner, bool hooked)
{
    /* Relaxed: written once by stm_init before any thread attached. */
    if (STM__LIKELY(!stm_load_relaxed(&stm_rtm_elide)) || hooked)
        stm_lock(owner);
    else
        stm_elide_lock_slow(owner);
}
#define stm_elide_lock(owner) stm_elide_lock_((owner), false)
#ifdef STM_TESTING
#define stm_elide_lock_hooked(owner, point) \
    stm_elide_lock_((owner), stm_test_hooks[(point)] != NULL)
#else
#define stm_elide_lock_hooked(owner, point) stm_elide_lock_((owner), false)
#endif

static inline void stm_elide_unlock(stm_thread *owner)
{
    if (STM__UNLIKELY(stm_load_relaxed(&stm_rtm_elide)) && stm_elide_active)
        stm_elide_unlock_slow(owner);
    else
        stm_unlock(owner);
}

#endif
