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

/* The chunk table: a two-level table over 48-bit addresses (2^28 chunks)
 * saying, for any address, which thread owns the chunk and whether it is
 * a nursery (entry: the owner's index, plus GC_CHUNK_NURSERY; 0 for
 * memory that is not the library's), and for a chunk of old pages where
 * its pages' records are (first_page: 1 + the index in the owner's
 * pages[] of the page at the chunk's start, set when that page is carved;
 * 0 for nurseries and large objects).  `entry` is read by any thread
 * (relaxed: set before the chunk's memory is handed out, and published
 * with it); `first_page` is written by the owner and read by the major
 * collector with the world stopped. */
#define GC_CHUNK_TOP_BITS 14
#define GC_CHUNK_LEAF_BITS (48 - GC_CHUNK_SHIFT - GC_CHUNK_TOP_BITS)
#define GC_CHUNK_NURSERY 0x8000u
typedef struct gc_chunk_slot {
    uint16_t entry;
    uint32_t first_page;
} gc_chunk_slot;
STM_HIDDEN extern gc_chunk_slot *gc_chunk_table[1u << GC_CHUNK_TOP_BITS];

/* The slot of p's chunk; NULL if no chunk near p was ever mapped. */
static inline gc_chunk_slot *gc_chunk_slot_of(const void *p)
{
    uintptr_t idx = (uintptr_t)p >> GC_CHUNK_SHIFT;
    if (idx >> (GC_CHUNK_LEAF_BITS + GC_CHUNK_TOP_BITS))
        return NULL;
    /* Pairs with the release store in chunk_table_set. */
    gc_chunk_slot *leaf = stm_load_acquire(&gc_chunk_table[idx >> GC_CHUNK_LEAF_BITS]);
    return leaf ? &leaf[idx & ((1u << GC_CHUNK_LEAF_BITS) - 1)] : NULL;
}

/* The record of the old page holding p, given p's chunk slot; NULL for a
 * large object.  World stopped (the owner's pages[] does not move). */
static inline gc_page *gc_page_of(const gc_chunk_slot *sl, const void *p)
{
    uint32_t first = stm_load_relaxed(&sl->first_page);
    if (!first)
        return NULL;
    stm_thread *owner = stm_thread_by_index(stm_load_relaxed(&sl->entry));
    return &owner->old.pages[first - 1 + (((uintptr_t)p & (GC_CHUNK - 1)) / GC_PAGE)];
}

/* Maps `size` bytes (rounded up to whole chunks) owned by thread `owner`;
 * `nursery` marks the chunks so that gc_is_any_nursery knows them.  NULL
 * when the system refuses or the heap limit would be exceeded. */
STM_HIDDEN void *gc_map_chunks(size_t size, unsigned owner, bool nursery);

/* The size class of a block of `size` bytes, and the class's block size:
 * 16-byte steps up to 1 KiB, then 1 KiB steps (up to GC_LARGE). */
static inline int gc_size_class(size_t size, size_t *class_size)
{
    if (size <= 1024) {
        size_t s = stm_round_size(size);
        *class_size = s;
        return (int)(s / 16) - 1;
    }
    size_t s = (size + 1023) & ~(size_t)1023;
    *class_size = s;
    return GC_SMALL_CLASSES + (int)(s / 1024) - 2;
}

/* Makes sure the survivors of a minor collection can be promoted without
 * allocating anything: `bytes` is the used nursery, all of which might
 * survive.  Reserves page records for that worst case (*records tells
 * whether that worked) and maps ahead the pages it needs; false if
 * anything was refused (nothing is lost: with *records, the caller may
 * count the survivors and try gc_old_reserve_exact). */
STM_HIDDEN bool gc_old_reserve(stm_thread *t, size_t bytes, bool *records);
/* The same for a known amount per size class (bytes_by_class[GC_CLASSES];
 * blocks larger than GC_LARGE are not promoted from a nursery).  Only
 * after a gc_old_reserve for at least as many bytes set *records. */
STM_HIDDEN bool gc_old_reserve_exact(stm_thread *t, const size_t *bytes_by_class);

/* Old space for a survivor of a minor collection, `rounded` bytes (a
 * multiple of STM_ALIGNMENT) that the caller overwrites entirely: unlike
 * gc_old_alloc, a small block is not zeroed first.  The common case (a
 * free block or room in the class's current page) stays inline. */
static inline void *gc_promote_alloc(stm_thread *t, size_t rounded)
{
    if (rounded <= (size_t)GC_SMALL_CLASSES * STM_ALIGNMENT) {
        gc_class_state *cs = &t->old.cls[rounded / STM_ALIGNMENT - 1];
        void *p = cs->free_list;
        if (p) {
            cs->free_list = (void *)((stm_header *)p)->revision;
            cs->nfree--;
        } else if ((size_t)(cs->end - cs->bump) >= rounded) {
            p = cs->bump;
            cs->bump += rounded;
        } else {
            return gc_old_alloc(t, rounded);
        }
        cs->nalloc++;
        stm_counter_add(&t->old.bytes_in_use, rounded);
        return p;
    }
    return gc_old_alloc(t, rounded);
}

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
