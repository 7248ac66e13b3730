/* pages.c -- the old generation's allocator: per-thread size-class pages
 * carved out of 1 MiB chunks, plus chunk-aligned large objects.  Also the
 * global chunk table that tells, for any address, which thread owns the
 * memory (the read barrier's slow path uses it to tell its own protected
 * copies from another thread's) and whether it is a nursery.
 *
 * Every block handed out is recorded (pages[] and large), so that the
 * major collection can sweep: a block is free if it carries F_FREE,
 * allocated otherwise; the part of a class's current page above its bump
 * pointer has never been handed out. */
#include <string.h>

#include "gc/pages.h"

gc_chunk_slot *gc_chunk_table[1u << GC_CHUNK_TOP_BITS];
static pthread_mutex_t chunk_table_mutex = PTHREAD_MUTEX_INITIALIZER;

static gc_chunk_slot *slot_for(uintptr_t a)
{
    uintptr_t idx = a >> GC_CHUNK_SHIFT;
    return &gc_chunk_table[(idx >> GC_CHUNK_LEAF_BITS) & ((1u << GC_CHUNK_TOP_BITS) - 1)]
                          [idx & ((1u << GC_CHUNK_LEAF_BITS) - 1)];
}

static bool chunk_table_set(uintptr_t addr, size_t size, unsigned entry)
{
    pthread_mutex_lock(&chunk_table_mutex);
    for (uintptr_t a = addr; a < addr + size; a += GC_CHUNK) {
        uintptr_t top = ((a >> GC_CHUNK_SHIFT) >> GC_CHUNK_LEAF_BITS) &
                        ((1u << GC_CHUNK_TOP_BITS) - 1);
        if (!gc_chunk_table[top]) {
            gc_chunk_slot *leaf =
                stm_sys_calloc((size_t)1 << GC_CHUNK_LEAF_BITS, sizeof(gc_chunk_slot));
            if (!leaf) {
                pthread_mutex_unlock(&chunk_table_mutex);
                return false;
            }
            /* Pairs with the acquire load in gc_chunk_slot_of: the zeroed
             * leaf is visible before its pointer. */
            stm_store_release(&gc_chunk_table[top], leaf);
        }
        gc_chunk_slot *sl = slot_for(a);
        stm_store_relaxed(&sl->entry, (uint16_t)entry);
        stm_store_relaxed(&sl->first_page, 0);
    }
    pthread_mutex_unlock(&chunk_table_mutex);
    return true;
}

/* fork(): the chunk table's lock is held across it (stm/lifecycle.c), so
 * the child never inherits it locked by a thread that does not exist. */
void gc_fork_lock(void) { pthread_mutex_lock(&chunk_table_mutex); }
void gc_fork_unlock(void) { pthread_mutex_unlock(&chunk_table_mutex); }

static unsigned chunk_entry(const void *p)
{
    const gc_chunk_slot *sl = gc_chunk_slot_of(p);
    return sl ? stm_load_relaxed(&sl->entry) : 0;
}

unsigned gc_owner_of(const void *p)
{
    return chunk_entry(p) & ~GC_CHUNK_NURSERY;
}

bool gc_is_any_nursery(const void *p)
{
    return (chunk_entry(p) & GC_CHUNK_NURSERY) != 0;
}

/* ---- mapping and the heap limit ------------------------------------- */

static bool heap_charge(size_t bytes)
{
    size_t limit = stm_g.cfg.heap_limit;
    size_t cur = stm_load_relaxed(&stm_g.heap_mapped);
    for (;;) {
        size_t next;
        if (__builtin_add_overflow(cur, bytes, &next) || (limit && next > limit))
            return false;
        /* Relaxed: a counter; the limit needs atomicity, not ordering. */
        if (__atomic_compare_exchange_n(&stm_g.heap_mapped, &cur, next, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            break;
    }
    size_t peak = stm_load_relaxed(&stm_g.heap_peak);
    while (peak < cur + bytes &&
           !__atomic_compare_exchange_n(&stm_g.heap_peak, &peak, cur + bytes, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return true;
}

static void heap_uncharge(size_t bytes)
{
    __atomic_fetch_sub(&stm_g.heap_mapped, bytes, __ATOMIC_RELAXED);
}

void *gc_map_chunks(size_t size, unsigned owner, bool nursery)
{
    size_t rounded;
    if (__builtin_add_overflow(size, GC_CHUNK - 1, &rounded))
        return NULL;
    rounded &= ~(GC_CHUNK - 1);
    if (!heap_charge(rounded))
        return NULL;
    void *p = stm_sys_map(rounded, GC_CHUNK);
    if (!p) {
        heap_uncharge(rounded);
        return NULL;
    }
    if (!chunk_table_set((uintptr_t)p, rounded, owner | (nursery ? GC_CHUNK_NURSERY : 0))) {
        stm_sys_unmap(p, rounded);
        heap_uncharge(rounded);
        return NULL;
    }
    return p;
}

static void unmap_chunks(void *p, size_t rounded)
{
    chunk_table_set((uintptr_t)p, rounded, 0);   /* clears: cannot fail */
    stm_sys_unmap(p, rounded);
    heap_uncharge(rounded);
}

/* ---- size classes ----------------------------------------------------- */

static size_t class_size_of(int c)
{
    return c < GC_SMALL_CLASSES ? (size_t)(c + 1) * 16 : (size_t)(c - GC_SMALL_CLASSES + 2) * 1024;
}

/* Records a page just carved from the current region (room reserved by
 * the caller); the first page of a chunk tells the chunk table where the
 * chunk's records start (pages of one region are recorded in address
 * order, so the rest follow it). */
static void record_page(gc_oldspace *o, char *start, int cls)
{
    if (((uintptr_t)start & (GC_CHUNK - 1)) == 0)
        stm_store_relaxed(&gc_chunk_slot_of(start)->first_page, (uint32_t)o->npages + 1);
    o->pages[o->npages].start = start;
    o->pages[o->npages].cls = cls;
    o->pages[o->npages].marked = 0;
    o->npages++;
}

/* A fresh page for class c: an emptied one from the pool, else carved
 * from the current chunk region (mapping a new chunk if needed). */
static char *new_page(stm_thread *t, int c)
{
    gc_oldspace *o = &t->old;
    if (o->free_pages.count) {
        size_t i = o->free_pages.items[--o->free_pages.count];
        o->pages[i].cls = c;
        /* Not cleared: promotion overwrites whole blocks, and
         * gc_old_alloc clears each block it hands out. */
        return o->pages[i].start;
    }
    if (o->npages == o->pages_cap) {
        size_t cap = o->pages_cap ? o->pages_cap * 2 : 64;
        gc_page *np = cap > SIZE_MAX / sizeof *np ? NULL
                                                 : stm_sys_realloc(o->pages, cap * sizeof *np);
        if (!np)
            return NULL;
        o->pages = np;
        o->pages_cap = cap;
    }
    /* The pool may have to take every page back: room for its index. */
    if (!stm_vec_reserve(&o->free_pages, o->npages + 1 - o->free_pages.count))
        return NULL;
    if ((size_t)(o->chunk_end - o->chunk_cur) < GC_PAGE) {
        char *chunk = gc_map_chunks(GC_CHUNK, t->index, false);
        if (!chunk)
            return NULL;
        o->bytes_mapped += GC_CHUNK;
        o->chunk_cur = chunk;
        o->chunk_end = chunk + GC_CHUNK;
    }
    char *page = o->chunk_cur;
    o->chunk_cur += GC_PAGE;
    record_page(o, page, c);
    return page;
}

void *gc_old_alloc(stm_thread *t, size_t size)
{
    gc_oldspace *o = &t->old;
    if (size > GC_LARGE) {
        size_t rounded = (size + GC_CHUNK - 1) & ~(GC_CHUNK - 1);
        if (size > rounded || !stm_vec_reserve(&o->large, 2))
            return NULL;
        char *p = gc_map_chunks(size, t->index, false);
        if (!p)
            return NULL;
        stm_vec_push_reserved(&o->large, (uintptr_t)p);
        stm_vec_push_reserved(&o->large, rounded);
        o->bytes_mapped += rounded;
        stm_counter_add(&o->bytes_in_use, rounded);
        return p;       /* fresh mappings are zero */
    }
    size_t csize;
    int c = gc_size_class(size, &csize);
    gc_class_state *cs = &o->cls[c];
    void *p;
    if (cs->free_list) {
        p = cs->free_list;
        cs->free_list = (void *)((stm_header *)p)->revision;
        cs->nfree--;
    } else {
        if ((size_t)(cs->end - cs->bump) < csize) {
            char *page = new_page(t, c);
            if (!page)
                return NULL;
            cs->bump = page;
            cs->end = page + GC_PAGE;
        }
        p = cs->bump;
        cs->bump += csize;
    }
    memset(p, 0, csize);   /* free blocks and pooled pages hold old data */
    cs->nalloc++;
    stm_counter_add(&o->bytes_in_use, csize);
    return p;
}

/* Fresh pages needed to place bytes_by_class[c] bytes in each class c,
 * given the room each class already has (free blocks, the rest of its
 * current page). */
static size_t pages_for_classes(stm_thread *t, const size_t *bytes_by_class)
{
    size_t pages = 0;
    for (int c = 0; c < GC_CLASSES; c++) {
        if (!bytes_by_class[c])
            continue;
        size_t csize = class_size_of(c);
        gc_class_state *cs = &t->old.cls[c];
        size_t blocks = bytes_by_class[c] / csize;
        size_t room = cs->nfree + (size_t)(cs->end - cs->bump) / csize;
        if (blocks <= room)
            continue;
        size_t per_page = GC_PAGE / csize;
        pages += (blocks - room + per_page - 1) / per_page;
    }
    return pages;
}

/* Maps a new region of at least `missing` bytes for t's pages (room for
 * the page records is reserved by the caller); the rest of the previous
 * region is given to the pool page by page, so nothing is abandoned. */
static bool map_region(stm_thread *t, size_t missing)
{
    gc_oldspace *o = &t->old;
    size_t rounded;
    if (__builtin_add_overflow(missing, GC_CHUNK - 1, &rounded))
        return false;
    rounded &= ~(GC_CHUNK - 1);
    char *region = gc_map_chunks(rounded, t->index, false);
    if (!region)
        return false;
    while ((size_t)(o->chunk_end - o->chunk_cur) >= GC_PAGE) {
        stm_vec_push_reserved(&o->free_pages, o->npages);
        record_page(o, o->chunk_cur, -1);
        o->chunk_cur += GC_PAGE;
    }
    o->bytes_mapped += rounded;
    o->chunk_cur = region;
    o->chunk_end = region + rounded;
    return true;
}

bool gc_old_reserve(stm_thread *t, size_t bytes, bool *records)
{
    *records = false;
    /* Worst case: every byte lands in fresh pages, plus one partly used
     * page per size class.  Pages in the pool count as room. */
    gc_oldspace *o = &t->old;
    size_t need;
    size_t slack = bytes / 32 + 1 < GC_CLASSES ? bytes / 32 + 1 : GC_CLASSES;
    if (__builtin_add_overflow(bytes, slack * GC_PAGE, &need))
        return false;
    size_t tail_pages = (size_t)(o->chunk_end - o->chunk_cur) / GC_PAGE;
    size_t have = tail_pages * GC_PAGE + o->free_pages.count * GC_PAGE;
    /* Page records for all of it (and for the tail of the current region,
     * which a new region retires to the pool), so that new_page cannot
     * fail either. */
    size_t pages_needed = need / GC_PAGE + 1 + tail_pages;
    if (o->npages + pages_needed > o->pages_cap) {
        size_t cap = o->npages + pages_needed + 64;
        gc_page *np = cap > SIZE_MAX / sizeof *np ? NULL
                                                 : stm_sys_realloc(o->pages, cap * sizeof *np);
        if (!np)
            return false;
        o->pages = np;
        o->pages_cap = cap;
    }
    if (!stm_vec_reserve(&o->free_pages, o->npages + pages_needed - o->free_pages.count))
        return false;
    *records = true;
    if (have >= need)
        return true;
    /* Map the worst case ahead: the pages stay untouched (no resident
     * memory) until promotions use them, and later collections find them
     * in the tail.  If the heap limit or the system refuses, the caller
     * counts what really survives and asks gc_old_reserve_exact. */
    return map_region(t, need - o->free_pages.count * GC_PAGE);
}

bool gc_old_reserve_exact(stm_thread *t, const size_t *bytes_by_class)
{
    gc_oldspace *o = &t->old;
    size_t pages = pages_for_classes(t, bytes_by_class);
    size_t tail_pages = (size_t)(o->chunk_end - o->chunk_cur) / GC_PAGE;
    size_t have = tail_pages + o->free_pages.count;
    if (pages <= have)
        return true;
    /* Page records: reserved by gc_old_reserve. */
    return map_region(t, (pages - have) * GC_PAGE);
}

static void free_block(stm_thread *t, void *p, int c, size_t csize)
{
#if STM_DEBUG > 0
    memset(p, 0xdd, csize);   /* stale readers see garbage, not old data */
#else
    (void)csize;
#endif
    stm_header *h = p;
    h->tid = 0;
    h->flags = F_FREE;
    h->revision = (intptr_t)t->old.cls[c].free_list;
    h->ident = 0;
    t->old.cls[c].free_list = p;
    t->old.cls[c].nfree++;
    t->old.cls[c].nalloc--;
}

void gc_old_free(stm_thread *t, void *p, size_t size)
{
    gc_oldspace *o = &t->old;
    if (size > GC_LARGE) {
        /* Recent large objects are at the end. */
        for (size_t i = o->large.count; i >= 2; i -= 2) {
            if (o->large.items[i - 2] == (uintptr_t)p) {
                size_t rounded = o->large.items[i - 1];
                o->large.items[i - 2] = o->large.items[o->large.count - 2];
                o->large.items[i - 1] = o->large.items[o->large.count - 1];
                o->large.count -= 2;
                o->bytes_mapped -= rounded;
                stm_counter_add(&o->bytes_in_use, -(uint64_t)rounded);
                unmap_chunks(p, rounded);
                return;
            }
        }
        stm_fatal("gc_old_free: %p is not a large object of thread %u", p, t->index);
    }
    size_t csize;
    int c = gc_size_class(size, &csize);
    stm_counter_add(&o->bytes_in_use, -(uint64_t)csize);
    free_block(t, p, c, csize);
}

/* The end of the blocks page pg has handed out: all of them, or up to the
 * bump pointer if it is its class's current page.  *current tells which. */
static char *page_used_end(const gc_oldspace *o, const gc_page *pg, size_t csize, bool *current)
{
    const gc_class_state *cs = &o->cls[pg->cls];
    /* By its end, not its bump pointer: a full current page's bump pointer
     * equals the start of the next page, which may be of the same class
     * (its blocks were then neither swept nor unmarked, and the stale
     * marks hid them from the next collection's tracing). */
    *current = cs->end == pg->start + GC_PAGE;
    return *current ? cs->bump : pg->start + (GC_PAGE / csize) * csize;
}

#if STM_DEBUG > 0
/* A page about to be pooled unwalked must hold no marked block (its
 * `marked` count said so); its contents become garbage for stale
 * readers, like any freed block.  Returns the blocks it had allocated. */
static size_t check_unmarked_page(const gc_page *pg, const char *end, size_t csize)
{
    size_t allocated = 0;
    for (const char *b = pg->start; b < end; b += csize) {
        uint32_t f = ((const stm_header *)b)->flags;
        if (f & F_MARK)
            stm_fatal("gc: page %p counted no mark but holds marked block %p", (void *)pg->start,
                      (const void *)b);
        allocated += !(f & F_FREE);
    }
    memset(pg->start, 0xdd, GC_PAGE);
    return allocated;
}
#endif

/* Page i, found empty by a sweep, goes back to the pool for any class. */
static void pool_page(gc_oldspace *o, size_t i)
{
    o->pages[i].cls = -1;
    stm_vec_push_reserved(&o->free_pages, i);   /* reserved in new_page */
}

void gc_sweep_oldspace(stm_thread *t, gc_sweep_result *r)
{
    gc_oldspace *o = &t->old;
    size_t live_blocks[GC_CLASSES];
    for (int c = 0; c < GC_CLASSES; c++) {
        o->cls[c].free_list = NULL;
        o->cls[c].nfree = 0;
        live_blocks[c] = 0;
    }
#if STM_DEBUG > 0
    size_t unwalked_allocated[GC_CLASSES] = { 0 };
    size_t walked_freed[GC_CLASSES] = { 0 };
#endif
    uint64_t in_use = 0;
    for (size_t i = 0; i < o->npages; i++) {
        gc_page *pg = &o->pages[i];
        if (pg->cls < 0)
            continue;
        size_t csize = class_size_of(pg->cls);
        gc_class_state *cs = &o->cls[pg->cls];
        bool current;
        char *end = page_used_end(o, pg, csize, &current);
        if (pg->marked == 0 && !current) {
            /* Nothing marked in it: every block is dead or free.  Pooled
             * without touching it (GCBench: most promoted trees die whole,
             * and walking their pages was a tenth of the run); the blocks
             * it had allocated count as freed through the class's nalloc
             * below. */
#if STM_DEBUG > 0
            unwalked_allocated[pg->cls] += check_unmarked_page(pg, end, csize);
#endif
            pool_page(o, i);
            continue;
        }
        pg->marked = 0;
        void *page_free = NULL;      /* this page's free blocks, in order */
        void **tail = &page_free;
        size_t live = 0, nfree = 0;
        for (char *b = pg->start; b < end; b += csize) {
            stm_header *h = (stm_header *)b;
            uint32_t f = h->flags;
            if (!(f & F_FREE)) {
                if (f & F_MARK) {
                    h->flags = f & ~F_GC_BITS;
                    live++;
                    continue;
                }
#if STM_DEBUG > 0
                walked_freed[pg->cls]++;
                memset(b, 0xdd, csize);
#endif
                h->tid = 0;
                h->flags = F_FREE;
                h->ident = 0;
            }
            h->revision = 0;
            *tail = b;
            tail = (void **)&h->revision;
            nfree++;
        }
        live_blocks[pg->cls] += live;
        if (live == 0 && !current) {
            /* Marks cleared since (compaction frees copies it moved). */
            pool_page(o, i);
            continue;
        }
        in_use += live * csize;
        *tail = cs->free_list;
        cs->free_list = page_free;
        cs->nfree += nfree;
    }
    /* What was allocated and is not live any more was freed, walked or
     * not (nalloc counts every block handed out and not freed). */
    for (int c = 0; c < GC_CLASSES; c++) {
        gc_class_state *cs = &o->cls[c];
        STM_ASSERT(cs->nalloc >= live_blocks[c]);
#if STM_DEBUG > 0
        if (cs->nalloc - live_blocks[c] != unwalked_allocated[c] + walked_freed[c])
            stm_fatal("gc: class %d had %zu blocks allocated, %zu live, but %zu were freed", c,
                      cs->nalloc, live_blocks[c], unwalked_allocated[c] + walked_freed[c]);
#endif
        size_t freed = cs->nalloc - live_blocks[c];
        r->objects_freed += freed;
        r->bytes_freed += freed * class_size_of(c);
        cs->nalloc = live_blocks[c];
    }
    r->bytes_live += in_use;
    size_t kept = 0;
    for (size_t i = 0; i < o->large.count; i += 2) {
        stm_header *h = (stm_header *)o->large.items[i];
        size_t rounded = o->large.items[i + 1];
        if (h->flags & F_MARK) {
            h->flags &= ~F_GC_BITS;
            o->large.items[kept++] = (uintptr_t)h;
            o->large.items[kept++] = rounded;
            in_use += rounded;
            r->bytes_live += rounded;
            continue;
        }
        r->objects_freed++;
        r->bytes_freed += rounded;
        o->bytes_mapped -= rounded;
        unmap_chunks(h, rounded);
    }
    o->large.count = kept;
    stm_store_relaxed(&o->bytes_in_use, in_use);
}

/* Calls fn on every block of t's old space handed out so far, free or
 * not, and on every large object. */
static void for_each_block(stm_thread *t, void (*fn)(stm_header *, void *), void *ctx)
{
    gc_oldspace *o = &t->old;
    for (size_t i = 0; i < o->npages; i++) {
        gc_page *pg = &o->pages[i];
        if (pg->cls < 0)
            continue;
        size_t csize = class_size_of(pg->cls);
        bool current;
        char *end = page_used_end(o, pg, csize, &current);
        for (char *b = pg->start; b < end; b += csize)
            fn((stm_header *)b, ctx);
    }
    for (size_t i = 0; i < o->large.count; i += 2)
        fn((stm_header *)o->large.items[i], ctx);
}

typedef void verify_fn(const stm_header *);

static void verify_block(stm_header *h, void *check)
{
    if ((h->flags & F_MARK) && !(h->flags & F_SHADOW))
        (*(verify_fn **)check)(h);
}

void gc_verify_oldspace(stm_thread *t, verify_fn *check)
{
    for_each_block(t, verify_block, &check);
}

static void unmark_block(stm_header *h, void *ctx)
{
    (void)ctx;
    if (!(h->flags & F_FREE))
        h->flags &= ~F_GC_BITS;
}

void gc_unmark_oldspace(stm_thread *t)
{
    for_each_block(t, unmark_block, NULL);
    for (size_t i = 0; i < t->old.npages; i++)
        t->old.pages[i].marked = 0;
}

uint64_t gc_old_bytes_in_use(void)
{
    uint64_t sum = 0;
    unsigned n = stm_load_acquire(&stm_g.threads_allocated);
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_thread_by_index(i);
        if (t)
            sum += stm_load_relaxed(&t->old.bytes_in_use);
    }
    return sum;
}
