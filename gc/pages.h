/* pages.h -- old-object pages, large objects and the address -> owner table. */
#ifndef GC_PAGES_H
#define GC_PAGES_H

#include "stm/core.h"

/* All GC memory (nurseries, old pages, large objects) is mapped in chunks
 * of GC_CHUNK bytes aligned to GC_CHUNK, each recorded with its owner. */
#define GC_CHUNK_SHIFT 20
#define GC_CHUNK ((size_t)1 << GC_CHUNK_SHIFT)
/* Every size class carves pages of this size out of its thread's chunks;
 * one size lets an emptied page serve any class afterwards. */
#define GC_PAGE ((size_t)64 << 10)
/* Objects above this size get chunks of their own. */
#define GC_LARGE ((size_t)32 << 10)

/* Maps `size` bytes (rounded up to whole chunks) owned by thread `owner`;
 * `nursery` marks the chunks so that gc_is_any_nursery knows them.  NULL
 * when the system refuses or the heap limit would be exceeded. */
STM_HIDDEN void *gc_map_chunks(size_t size, unsigned owner, bool nursery);

/* What a sweep did, summed over the threads it ran for. */
typedef struct gc_sweep_result {
    uint64_t objects_freed, bytes_freed, bytes_live;
} gc_sweep_result;

/* Frees every allocated block of `t`'s old space that does not carry
 * F_MARK, clears the collection bits of the others, rebuilds the free
 * lists and returns emptied pages to the pool.  World stopped. */
STM_HIDDEN void gc_sweep_oldspace(stm_thread *t, gc_sweep_result *r);
/* Clears the collection bits of every allocated block of `t` (an
 * abandoned collection). */
STM_HIDDEN void gc_unmark_oldspace(stm_thread *t);
/* Calls check on every marked block of `t` (debug verification). */
STM_HIDDEN void gc_verify_oldspace(stm_thread *t, void (*check)(const stm_header *));

/* Held across fork() by stm/lifecycle.c. */
STM_HIDDEN void gc_fork_lock(void);
STM_HIDDEN void gc_fork_unlock(void);

#endif
