/* atomics.h -- the only place where memory ordering is spelled out.
 *
 * Every shared word of the library goes through these wrappers.  Relaxed
 * accesses order nothing and are used for words that are racy by design
 * (header flags hints, statistics); every acquire/release/seq_cst use site
 * carries a comment naming the access it pairs with.  The wrappers take
 * plain (non-_Atomic) lvalues so that the same words can be read by the
 * inline fast paths in stm.h, which use __atomic_load_n(.., RELAXED). */
#ifndef STM_ATOMICS_H
#define STM_ATOMICS_H

#include <stdbool.h>
#include <stdint.h>

#define stm_load_relaxed(p)       __atomic_load_n((p), __ATOMIC_RELAXED)
#define stm_load_acquire(p)       __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define stm_store_relaxed(p, v)   __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define stm_store_release(p, v)   __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Sequentially consistent, for the one Dekker-style handshake (a thread
 * announcing it runs vs. the collector announcing it wants to stop
 * everyone: gc/major.c). */
#define stm_load_seq_cst(p)       __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define stm_store_seq_cst(p, v)   __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/* Strong CAS; on failure *expected receives the current value. */
#define stm_cas_acq_rel(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), false, \
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define stm_cas_acquire(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), false, \
                                __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)

#define stm_cas_release(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), false, \
                                __ATOMIC_RELEASE, __ATOMIC_RELAXED)

#define stm_fetch_or_relaxed(p, v)  __atomic_fetch_or((p), (v), __ATOMIC_RELAXED)
#define stm_fetch_or_release(p, v)  __atomic_fetch_or((p), (v), __ATOMIC_RELEASE)
#define stm_fetch_and_relaxed(p, v) __atomic_fetch_and((p), (v), __ATOMIC_RELAXED)
#define stm_exchange_acquire(p, v)  __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)

/* A full fence, for the few places that need store->load ordering. */
#define stm_fence_seq_cst()       __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Per-thread counters: written by their owner only, read by anyone.  A
 * relaxed load+store (not an RMW) keeps the owner's cost at a plain add. */
#define stm_counter_add(p, v) \
    stm_store_relaxed((p), stm_load_relaxed(p) + (v))

static inline void stm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
