/* stm_testing.h -- test-only entry points, compiled into the library only
 * when STM_TESTING is defined (the debug, asan and tsan variants).  Not
 * part of the public API. */
#ifndef STM_TESTING_H
#define STM_TESTING_H

#include "stm.h"

/* What kind of copy `obj` is, as seen by the calling thread. */
typedef enum stm_test_kind {
    STM_KIND_PRIVATE,          /* written or created by the running transaction */
    STM_KIND_PRIVATE_FROM_PROTECTED, /* protected object being written in place */
    STM_KIND_PROTECTED,        /* committed, owned by a thread, not public */
    STM_KIND_PUBLIC,           /* public and current */
    STM_KIND_PUBLIC_OUTDATED,  /* public, a newer version exists */
    STM_KIND_STUB,             /* forwarder into another thread's copy */
    STM_KIND_BACKUP,           /* undo copy */
    STM_KIND_MOVED,            /* forwarder to a copy with the same content */
    STM_KIND_LOCKED,           /* public, locked by a committer */
} stm_test_kind;
stm_test_kind stm_test_kind_of(const void *obj);
const char *stm_test_kind_name(stm_test_kind k);

/* The backup of a private-from-protected object (NULL otherwise). */
void *stm_test_backup_of(const void *obj);
/* True if `obj` lies in the calling thread's nursery. */
int stm_test_is_young(const void *obj);
/* The index of the thread that owns the memory of `obj` (0: none). */
unsigned stm_test_owner_of(const void *obj);
/* The calling thread's index (1-based). */
unsigned stm_test_thread_index(void);
/* The global clock. */
intptr_t stm_test_global_time(void);
/* Size of the calling thread's read set. */
size_t stm_test_read_set_size(void);
/* The library's sort of words (read-set deduplication, lock order). */
void stm_test_sort_words(uintptr_t *items, size_t n);
/* The calling thread's snapshot (the clock value its reads are valid at). */
intptr_t stm_test_snapshot(void);

/* The serialisation point of the calling thread's last commit, for the
 * history checker (tests/model/history.c): a shared commit that took the
 * clock from t to t+2 returns t+1 (odd); a read-only or private commit
 * returns its final snapshot (even), since it serialises there (DESIGN.md
 * 3.3).  Commits are serialisable in the order of these points; equal
 * (even) points do not conflict with each other.  Valid after stm_run or
 * stm_commit returned, until the thread's next transaction begins. */
intptr_t stm_test_last_commit_point(void);

/* Makes the Nth internal allocation from now fail (n = 0: the next one);
 * a negative n disables injection. */
void stm_test_fail_allocations(long n);

/* Abort budget: after `n` more aborts of the calling thread, the next
 * abort calls the fatal handler with "unexpected abort" (n < 0: no limit).
 * Lets a test assert that something does NOT abort. */
void stm_test_set_max_aborts(long n);

/* Protocol points where a test may run code in the thread that reaches
 * them, to build deterministic interleavings of two threads. */
typedef enum stm_test_point {
    STM_POINT_COMMIT_START,      /* commit_tx entered, nothing locked */
    STM_POINT_COMMIT_LOCKED,     /* shared commit: write locks held, before the clock */
    STM_POINT_COMMIT_UNLOCKED,   /* private or shared commit: own lock released, the
                                  * transaction (inevitable or not) not yet ended */
    STM_POINT_COMMIT_DONE,       /* commit finished */
    STM_POINT_STEAL_LOCKED,      /* thief holds the owner's lock, before copying */
    STM_POINT_ABORT,             /* an abort is about to roll back */
    STM_POINT_COUNT
} stm_test_point;
typedef void stm_test_hook_fn(stm_test_point point, void *arg);
/* Installs `fn` for `point` in the calling thread only (NULL removes). */
void stm_test_set_hook(stm_test_point point, stm_test_hook_fn *fn, void *arg);

#endif
