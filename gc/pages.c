/* pages.c -- the old generation's allocator: per-thread size-class pages
 * carved out of 1 MiB chunks, plus chunk-aligned large objects.  Also the
 * global chunk table that tells, for any address, which thread owns the
 * memory: the read barrier's slow path uses it to tell its own protected
 * copies from another thread's (which must be stolen). */
#include <string.h>

#include "gc/pages.h"

/* Two-level table over 48-bit addresses: 2^28 chunks. */
#define TOP_BITS 14
#define LEAF_BITS (48 - GC_CHUNK_SHIFT - TOP_BITS)
static uint16_t *chunk_table[1u << TOP_BITS];
static pthread_mutex_t chunk_table_mutex = PTHREAD_MUTEX_INITIALIZER;

static bool chunk_table_set(uintptr_t addr, size_t size, unsigned owner)
{
    pthread_mutex_lock(&chunk_table_mutex);
    for (uintptr_t a = addr; a < addr + size; a += GC_CHUNK) {
        uintptr_t idx = a >> GC_CHUNK_SHIFT;
        uintptr_t top = (idx >> LEAF_BITS) & ((1u << TOP_BITS) - 1);
        uint16_t *leaf = chunk_table[top];
        if (!leaf) {
            leaf = stm_sys_calloc((size_t)1 << LEAF_BITS, sizeof(uint16_t));
            if (!leaf) {
                pthread_mutex_unlock(&chunk_table_mutex);
                return false;
            }
            /* Pairs with the acquire load in gc_owner_of: the zeroed leaf
             * is visible before its pointer. */
            stm_store_release(&chunk_table[top], leaf);
        }
        stm_store_relaxed(&leaf[idx & ((1u << LEAF_BITS) - 1)], (uint16_t)owner);
    }
    pthread_mutex_unlock(&chunk_table_mutex);
    return true;
}

/* fork(): the chunk table's lock is held across it (stm/lifecycle.c), so
 * the child never inherits it locked by a thread that does not exist. */
void gc_fork_lock(void) { pthread_mutex_lock(&chunk_table_mutex); }
void gc_fork_unlock(void) { pthread_mutex_unlock(&chunk_table_mutex); }

unsigned gc_owner_of(const void *p)
{
    uintptr_t idx = (uintptr_t)p >> GC_CHUNK_SHIFT;
    uintptr_t top = (idx >> LEAF_BITS) & ((1u << TOP_BITS) - 1);
    /* Pairs with the release store in chunk_table_set. */
    uint16_t *leaf = stm_load_acquire(&chunk_table[top]);
    if (!leaf || (idx >> (LEAF_BITS + TOP_BITS)) != 0)
        return 0;
    return stm_load_relaxed(&leaf[idx & ((1u << LEAF_BITS) - 1)]);
}

void *gc_map_chunks(size_t size, unsigned owner)
{
    size_t rounded;
    if (__builtin_add_overflow(size, GC_CHUNK - 1, &rounded))
        return NULL;
    rounded &= ~(GC_CHUNK - 1);
    void *p = stm_sys_map(rounded, GC_CHUNK);
    if (!p)
        return NULL;
    if (!chunk_table_set((uintptr_t)p, rounded, owner)) {
        stm_sys_unmap(p, rounded);
        return NULL;
    }
    return p;
}

static int size_class(size_t size, size_t *class_size)
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

/* Objects above this size get chunks of their own. */
#define GC_LARGE ((size_t)32 << 10)

void *gc_old_alloc(stm_thread *t, size_t size)
{
    if (size > GC_LARGE) {
        char *p = gc_map_chunks(size, t->index);
        if (p)
            t->old.bytes_mapped += (size + GC_CHUNK - 1) & ~(GC_CHUNK - 1);
        return p;       /* fresh mappings are zero */
    }
    size_t csize;
    int c = size_class(size, &csize);
    gc_class_state *cs = &t->old.cls[c];
    if (cs->free_list) {
        void *p = cs->free_list;
        cs->free_list = *(void **)p;
        memset(p, 0, csize);
        return p;
    }
    if ((size_t)(cs->end - cs->bump) < csize) {
        size_t page = c < GC_SMALL_CLASSES ? GC_PAGE_SMALL : GC_PAGE_MEDIUM;
        if ((size_t)(t->old.chunk_end - t->old.chunk_cur) < page) {
            char *chunk = gc_map_chunks(GC_CHUNK, t->index);
            if (!chunk)
                return NULL;
            t->old.bytes_mapped += GC_CHUNK;
            t->old.chunk_cur = chunk;
            t->old.chunk_end = chunk + GC_CHUNK;
        }
        cs->bump = t->old.chunk_cur;
        cs->end = cs->bump + page;
        t->old.chunk_cur += page;
    }
    void *p = cs->bump;
    cs->bump += csize;
    return p;           /* never used before: still zero */
}

bool gc_old_reserve(stm_thread *t, size_t bytes)
{
    /* Worst case: every byte lands in fresh pages, plus one partly used
     * page per size class. */
    size_t need;
    if (__builtin_add_overflow(bytes, (size_t)GC_CLASSES * GC_PAGE_MEDIUM, &need))
        return false;
    if ((size_t)(t->old.chunk_end - t->old.chunk_cur) >= need)
        return true;
    size_t rounded = (need + GC_CHUNK - 1) & ~(GC_CHUNK - 1);
    char *region = gc_map_chunks(rounded, t->index);
    if (!region)
        return false;
    /* The rest of the previous region is abandoned (at most one region's
     * tail per reservation that did not fit). */
    t->old.bytes_mapped += rounded;
    t->old.chunk_cur = region;
    t->old.chunk_end = region + rounded;
    return true;
}

void gc_old_free(stm_thread *t, void *p, size_t size)
{
    if (size > GC_LARGE) {
        size_t rounded = (size + GC_CHUNK - 1) & ~(GC_CHUNK - 1);
        chunk_table_set((uintptr_t)p, rounded, 0);
        stm_sys_unmap(p, rounded);
        t->old.bytes_mapped -= rounded;
        return;
    }
    size_t csize;
    int c = size_class(size, &csize);
#if STM_DEBUG > 0
    memset(p, 0xdd, csize);
#endif
    *(void **)p = t->old.cls[c].free_list;
    t->old.cls[c].free_list = p;
}
