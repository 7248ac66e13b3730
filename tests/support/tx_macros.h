/* tx_macros.h -- short forms used by the suites. */
#ifndef TX_MACROS_H
#define TX_MACROS_H

#include "test_support.h"

/* An explicit inevitable transaction, for set-up steps that must not
 * abort (usable in any thread). */
#define TX_BEGIN()                                                         \
    do {                                                                   \
        int ts_r_ = stm_begin_inevitable();                                \
        CHECK(ts_r_ == STM_OK, "stm_begin_inevitable returned %d", ts_r_); \
    } while (0)
#define TX_COMMIT()                                                        \
    do {                                                                   \
        int ts_r_ = stm_commit();                                          \
        CHECK(ts_r_ == STM_OK, "stm_commit returned %d", ts_r_);           \
    } while (0)

/* Reads/writes through the barriers. */
#define RD(p) ((node *)stm_read(p))
#define WR(p) ((node *)stm_write(p))

/* The difference of a counter between two ts_stats() snapshots. */
#define DELTA(after, before, field) ((long long)((after).field - (before).field))

/* The flag stm/core.h calls F_PUBLIC_TO_PRIVATE: set on a public copy that
 * some thread has a private copy of (white-box: not in stm.h). */
#define TS_FLAG_PUBLIC_TO_PRIVATE 0x0004u

/* The target of a stub (revision = target | 2, docs/DESIGN.md 1.2). */
static inline void *ts_stub_target(const void *stub)
{
    intptr_t rev = __atomic_load_n(&((const stm_header *)stub)->revision, __ATOMIC_ACQUIRE);
    return (rev & 3) == 2 ? (void *)(rev & ~(intptr_t)3) : NULL;
}
/* The copy a revision word points to (outdated or moved copies), or NULL. */
static inline void *ts_forward(const void *obj)
{
    intptr_t rev = __atomic_load_n(&((const stm_header *)obj)->revision, __ATOMIC_ACQUIRE);
    return (rev != 0 && (rev & 3) == 0) ? (void *)rev : NULL;
}

#endif
