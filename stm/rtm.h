/* rtm.h -- optional lock elision with Intel RTM (docs/DESIGN.md, "Lock
 * elision"): the one interface through which the library uses hardware
 * transactions, its backends, detection and the retry policy.
 *
 * Backends: HW (the real instructions), EMULATE (a "transaction" holds
 * one global lock and the elided lock word itself) and SCRIPT (each begin
 * returns the next status of a per-thread script; a scripted STARTED
 * starts an emulated transaction).  EMULATE and SCRIPT exist only in
 * STM_TESTING builds, chosen by STM_RTM_BACKEND at stm_init, so that the
 * elided and the fallback paths run on machines without RTM.
 *
 * The call sites use the inline helpers of stm/elide.h, never these
 * functions directly. */
#ifndef STM_RTM_H
#define STM_RTM_H

#include "stm/core.h"
#include "stm/arch_rtm.h"

typedef enum stm_rtm_backend {
    STM_RTM_BACKEND_HW,
    STM_RTM_BACKEND_SCRIPT,
    STM_RTM_BACKEND_EMULATE,
} stm_rtm_backend;

/* The retry policy (DESIGN.md explains the numbers). */
#define STM_ELIDE_MAX_RETRIES 3   /* transient aborts (CONFLICT, RETRY) per acquisition */
#define STM_ELIDE_MAX_BUSY 8      /* lock-held aborts per acquisition */

/* Nonzero once stm_init decided to elide.  Written once by stm_init
 * before any thread attaches, read (relaxed) on every elidable lock. */
extern STM_HIDDEN int stm_rtm_elide;
/* Nonzero while the calling thread runs an elided critical section. */
extern STM_HIDDEN __thread int stm_elide_active;

/* Decides at stm_init: `mode` is stm_config.rtm, overridden by STM_RTM
 * (and, in testing builds, the backend by STM_RTM_BACKEND).  Returns
 * STM_OK, STM_EINVAL (bad mode or spelling) or STM_ENOTSUP (mode on and
 * RTM not usable). */
STM_HIDDEN int stm_rtm_init(int mode);

/* The slow halves of stm/elide.h: try to run the critical section of
 * `owner`'s collection lock as a hardware transaction (retrying by the
 * policy), else take the lock; and end such a section. */
STM_HIDDEN void stm_elide_lock_slow(stm_thread *owner);
STM_HIDDEN void stm_elide_unlock_slow(stm_thread *owner);

/* Called first by stm_fatal: inside a hardware transaction it aborts it
 * (the fatal error then happens again on the fallback path, where it can
 * be reported); inside an emulated one it turns the section into an
 * ordinary lock hold, so that a handler that longjmps leaves the library
 * as it would without elision. */
STM_HIDDEN void stm_elide_on_fatal(void);

#endif
