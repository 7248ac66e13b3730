/* nursery.c -- per-thread nurseries and minor collection.
 *
 * Each thread bump-allocates in its own nursery (stm_allocate, inline in
 * stm.h).  When it is full the thread runs a minor collection on its own,
 * holding only its own collection lock (which keeps thieves out while
 * objects move): survivors are copied to the thread's old pages and every
 * reference to them is updated.  No other thread is stopped.
 *
 * Roots of a minor collection: the shadow stack; the remembered set (old
 * objects written since the last collection); our private copies of public
 * objects (values of p2p); objects written in place and their backups;
 * stubs other threads hold into our nursery; objects whose committed state
 * was stolen while we modified them. */
#include <string.h>

#include "gc/pages.h"

/* Under AddressSanitizer the nursery's free part is poisoned: memory a
 * minor collection has moved objects out of becomes inaccessible until it
 * is allocated again, so a stale pointer into it faults at once instead
 * of reading zeroes or a newer object (docs/TESTING.md).  The inline
 * allocation fast path cannot unpoison, so in this build the visible
 * allocation limit stays at the bump pointer and every allocation takes
 * the slow path, which unpoisons what it hands out. */
#if defined(__SANITIZE_ADDRESS__)
#  define GC_POISON_NURSERY 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define GC_POISON_NURSERY 1
#  endif
#endif
#ifdef GC_POISON_NURSERY
#include <sanitizer/asan_interface.h>
#define POISON(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Allocation hands out zeroed memory.  Clearing the whole used nursery at
 * the end of a minor collection would write it once there and once more
 * when it is allocated again, by which time a nursery larger than the
 * cache has evicted it.  Instead the inline fast path only sees the
 * nursery up to `nursery_zeroed`, and the slow path clears the next
 * GC_ZERO_STEP bytes just before they are handed out, while they will stay
 * in the cache (GCBench: 11% of its time was that memset).  Under ASan the
 * whole used part is cleared and poisoned at once instead (see above). */
#define GC_ZERO_STEP ((size_t)32 << 10)

char *gc_nursery_alloc_end(const stm_thread *t)
{
#ifdef GC_POISON_NURSERY
    return t->tl->nursery_cur;
#else
    return t->nursery_zeroed;
#endif
}

/* Makes [nursery_cur, end) zero, clearing at least one step ahead. */
static void zero_ahead(stm_thread *t, char *end)
{
#ifdef GC_POISON_NURSERY
    (void)t, (void)end;     /* cleared at each collection */
#else
    if (end <= t->nursery_zeroed)
        return;
    char *to = t->nursery_zeroed + GC_ZERO_STEP;
    if (to < end)
        to = end;
    if (to > t->nursery_limit || to < t->nursery_zeroed)
        to = t->nursery_limit;
    memset(t->nursery_zeroed, 0, (size_t)(to - t->nursery_zeroed));
    t->nursery_zeroed = to;
#endif
}

void *gc_nursery_take(stm_thread *t, size_t rounded)
{
    if ((size_t)(t->nursery_limit - t->tl->nursery_cur) < rounded)
        return NULL;
    char *p = t->tl->nursery_cur;
    UNPOISON(p, rounded);
    zero_ahead(t, p + rounded);    /* keeps nursery_cur <= nursery_zeroed */
    t->tl->nursery_cur = p + rounded;
    t->tl->nursery_end = gc_nursery_alloc_end(t);
    return p;
}

bool gc_thread_init(stm_thread *t)
{
    if (t->nursery_base)
        return true;    /* a reused descriptor keeps its nursery */
    size_t size = stm_g.cfg.nursery_size;
    char *base = gc_map_chunks(size, t->index, true);
    if (!base)
        return false;
    t->nursery_base = base;
    t->nursery_limit = base + size;
    t->nursery_zeroed = base + size;    /* fresh mappings are zero */
    t->tl->nursery_cur = base;
    POISON(base, size);
    return true;
}

bool stm_is_young(const stm_thread *t, const void *p)
{
    return (uintptr_t)p - (uintptr_t)t->nursery_base <
           (uintptr_t)(t->nursery_limit - t->nursery_base);
}

typedef struct minor_ctx {
    stm_thread *t;
    stm_vec *work;          /* copied objects whose fields are still to visit */
    uint64_t promoted;
} minor_ctx;

/* The reserved old address (stm_id) of young object h, if any.  Any
 * other ident is an original, possibly another thread's object whose
 * flags its owner writes without our lock (its minor collection re-arms
 * F_WRITE_BARRIER): a shadow is always ours (stm_id takes it from our old
 * space), so we read the flags of our objects only.  Relaxed: other
 * threads set hint bits of our public objects with atomic ors (found by
 * TSan in intset). */
static stm_header *shadow_of(stm_thread *t, const stm_header *h)
{
    uintptr_t id = h->ident;
    if (h->flags & F_PFP)
        id = ((const stm_header *)id)->ident;   /* the backup: ours */
    stm_header *s = (stm_header *)id;
    if (!s || gc_owner_of(s) != t->index)
        return NULL;
    return (stm_load_relaxed(&s->flags) & F_SHADOW) ? s : NULL;
}

/* Returns the address `p` (a young object) lives at after the collection. */
static void *evacuate(minor_ctx *cx, void *p)
{
    stm_header *h = p;
    if (h->flags & F_MOVED)
        return (void *)h->revision;   /* copied already, or stolen */
    /* The whole rounded block: the nursery keeps the slack zero, and the
     * old block need not be cleared first. */
    size_t size = stm_round_size(gc_object_size(p));
    stm_header *shadow = shadow_of(cx->t, h);
    void *n = shadow ? (void *)shadow : gc_promote_alloc(cx->t, size);
    if (!n)   /* cannot happen: gc_old_reserve ran first */
        stm_fatal("out of memory while promoting %zu bytes in a minor collection", size);
    memcpy(n, p, size);
    if (shadow) {
        /* Its identity was promised this address: it is the original. */
        if (h->flags & F_PFP)
            ((stm_header *)h->ident)->ident = 0;
        else
            ((stm_header *)n)->ident = 0;
    }
    ((stm_header *)n)->flags |= F_WRITE_BARRIER;
    if (h->flags & F_WEAKREF)
        stm_vec_push_reserved(&cx->t->minor_weakrefs, (uintptr_t)n);
    if (h->revision == cx->t->prn && cx->t->state != TX_NONE)
        stm_vec_push_reserved(&cx->t->tx_old_private, (uintptr_t)n);
    /* No other thread reads these words: the owner's collection lock is
     * held, and thieves only look at our objects under it. */
    h->flags |= F_MOVED;
    h->revision = (intptr_t)n;
    cx->promoted += size;
    stm_vec_push_reserved(cx->work, (uintptr_t)n);   /* reserved up front */
    return n;
}

static void visit_slot(void **slot, void *ctx)
{
    minor_ctx *cx = ctx;
    void *p = *slot;
    if (p && stm_is_young(cx->t, p))
        *slot = evacuate(cx, p);
}

static void trace_object(minor_ctx *cx, void *obj)
{
    gc_trace_fields(obj, visit_slot, cx);
}

/* Where a young pointer held outside the heap ends up: NULL if it died. */
static void *survivor(stm_thread *t, void *p)
{
    if (!stm_is_young(t, p))
        return p;
    stm_header *h = p;
    return (h->flags & F_MOVED) ? (void *)h->revision : NULL;
}

static bool minor_collect(stm_thread *t);

/* The roots of a minor collection, in order: (1) the shadow stack; (2) the
 * remembered set, old objects written since the last collection (their
 * fields); (3) our private copies of public objects; (4) objects written
 * in place and their backups (old copies holding the committed state,
 * whose fields may point into the nursery); (5) stubs other threads hold
 * into our nursery.  Public copies of objects we are modifying need no
 * visit: after stm_drain_stolen they are p2p keys whose values are in (3).
 * `collecting` (minor_collect itself) also does the bookkeeping that goes
 * with moving: remembered objects get WRITE_BARRIER back, and stubs are
 * re-pointed to where their target went; without it (counting survivors,
 * reserve_survivors) nothing is written but what `visit` writes. */
static void visit_minor_roots(stm_thread *t, stm_visit_fn *visit, void *ctx, bool collecting)
{
    for (void **s = t->ss_bottom; s < t->tl->ss_top; s++)
        visit(s, ctx);
    for (size_t i = 0; i < t->old_to_trace.count; i++) {
        stm_header *o = (stm_header *)t->old_to_trace.items[i];
        gc_trace_fields(o, visit, ctx);
        if (!collecting)
            continue;
        o->flags |= F_WRITE_BARRIER;   /* the next write records it again */
        /* Old objects this transaction created or copied stay known to
         * the major collector (it may run while C locals hold them). */
        if (o->revision == t->prn && t->state != TX_NONE && !(o->flags & F_PFP))
            stm_vec_push_reserved(&t->tx_old_private, (uintptr_t)o);
    }
    STM_MAP_FOREACH(&t->p2p, e) visit((void **)&e->value, ctx);
    for (size_t i = 0; i < t->pfp.count; i++) {
        visit((void **)&t->pfp.items[i], ctx);
        stm_header *o = (stm_header *)t->pfp.items[i];
        gc_trace_fields((void *)o->ident, visit, ctx);
    }
    for (size_t i = 0; i < t->young_stubs.count; i++) {
        stm_stub *s = (stm_stub *)t->young_stubs.items[i];
        intptr_t rev = stm_load_relaxed(&s->hdr.revision);
        if (!REV_IS_STUBPTR(rev))
            continue;
        void *target = (void *)(rev & ~(intptr_t)3);
        if (!stm_is_young(t, target))
            continue;
        visit(&target, ctx);
        if (!collecting)
            continue;
        /* A target a thief published (F_MOVED) is now that public copy,
         * in the thief's old space: the stub becomes a plain forwarder to
         * it.  Kept as a stub it would lead readers to lock us for an
         * object that is not ours (stm_steal trusts s->owner).  Relaxed:
         * the copy was made under our lock, which we hold; its flags only
         * gain hint bits meanwhile. */
        intptr_t now = (intptr_t)target;
        if (!(stm_load_relaxed(&((stm_header *)target)->flags) & F_PUBLIC))
            now |= 2;
        /* Release: pairs with the acquire loads of stub revisions in
         * stm_resolve: the copied object is complete before it is
         * reachable through the stub. */
        stm_store_release(&s->hdr.revision, now);
    }
}

/* ---- counting the survivors (when memory is tight) ---- */

/* The fallback of the reservation: when the worst case (every nursery
 * byte survives) does not fit under the heap limit, trace what really
 * survives, without moving anything, and reserve exactly that.  Without
 * it a nursery full of dead objects that reference dropped old data could
 * never be collected near the limit, and the major collection, which
 * treats every young object as a root, could not free that data either.
 * Young objects are marked with F_MARK (unused on young objects outside
 * this function: the major collection marks old ones only, and cannot run
 * now).  The roots are minor_collect's own (visit_minor_roots), so the
 * count cannot miss one. */
typedef struct count_ctx {
    stm_thread *t;
    stm_vec *work;
    size_t bytes[GC_CLASSES];
} count_ctx;

static void count_visit(void **slot, void *ctx)
{
    count_ctx *cc = ctx;
    stm_header *h = *slot;
    if (!h || !stm_is_young(cc->t, h) || (h->flags & (F_MOVED | F_MARK)))
        return;
    h->flags |= F_MARK;
    stm_vec_push_reserved(cc->work, (uintptr_t)h);   /* one entry per object */
    if (!shadow_of(cc->t, h)) {
        size_t csize;
        int c = gc_size_class(stm_round_size(gc_object_size(h)), &csize);
        cc->bytes[c] += csize;
    }
}

/* Own lock held, stolen pairs drained; t->gc_work reserved for one entry
 * per nursery object. */
static bool reserve_survivors(stm_thread *t)
{
    count_ctx cc = { .t = t, .work = &t->gc_work };
    stm_vec_clear(cc.work);
    visit_minor_roots(t, count_visit, &cc, false);
    for (size_t i = 0; i < cc.work->count; i++)
        gc_trace_fields((void *)cc.work->items[i], count_visit, &cc);
    for (size_t i = 0; i < cc.work->count; i++)
        ((stm_header *)cc.work->items[i])->flags &= ~F_MARK;
    stm_vec_clear(cc.work);
    return gc_old_reserve_exact(t, cc.bytes);
}

bool gc_minor_collect(stm_thread *t)
{
    uint64_t t0 = gc_now_ns();
    bool ok = minor_collect(t);
    if (ok)
        gc_histogram_add(&t->minor_pauses, gc_now_ns() - t0);
    return ok;
}

static bool minor_collect(stm_thread *t)
{
    stm_vec *work = &t->gc_work;   /* kept between collections */
    minor_ctx cx = { .t = t, .work = work, .promoted = 0 };
    stm_vec_clear(work);
    stm_vec_clear(&t->minor_weakrefs);
    /* Everything that can fail is done before anything moves: the scan
     * queue holds at most one entry per survivor (objects are at least 32
     * bytes), and old space gets room for every byte in the nursery. */
    size_t used = (size_t)(t->tl->nursery_cur - t->nursery_base);
    size_t survivors = used / 32 + 1;
    bool records = false, room = false;
    if (!stm_vec_reserve(work, survivors) || !stm_vec_reserve(&t->minor_weakrefs, survivors) ||
        !stm_vec_reserve(&t->tx_old_private, survivors + t->old_to_trace.count) ||
        !stm_vec_reserve(&t->old_finalizable, t->young_finalizable.count))
        return false;
    room = gc_old_reserve(t, used, &records);
    if (!records)
        return false;
    stm_lock(t);
    stm_drain_stolen(t);
    /* Counted under the lock: no thief adds a stub (a root) meanwhile. */
    if (!room && !reserve_survivors(t)) {
        stm_unlock(t);
        return false;
    }

    visit_minor_roots(t, visit_slot, &cx, true);
    stm_vec_clear(&t->old_to_trace);
    stm_vec_clear(&t->young_stubs);

    /* Transitive closure, breadth first (Cheney order: the scan walks the
     * copies in the order they were made).  Depth first from a stack,
     * as before, cost GCBench about 10% more in minor collections with
     * a 4 MiB nursery and 10% more wall time (docs/PERFORMANCE.md). */
    for (size_t scan = 0; scan < work->count; scan++)
        trace_object(&cx, (void *)work->items[scan]);
    stm_vec_clear(work);

    /* Weak references promoted now: their young targets moved or died. */
    for (size_t i = 0; i < t->minor_weakrefs.count; i++) {
        gc_weakref *w = (gc_weakref *)t->minor_weakrefs.items[i];
        if (w->target && stm_is_young(t, w->target)) {
            w->target = survivor(t, w->target);
            if (!w->target)
                stm_stat(t, STAT_weakrefs_cleared, 1);
        }
    }
    /* Reserved addresses whose young object did not move into them: a
     * thief copied the object (the address stays as its original, now a
     * forwarder), or it died (the address is freed). */
    for (size_t i = 0; i < t->young_shadows.count; i += 2) {
        stm_header *y = (stm_header *)t->young_shadows.items[i];
        stm_header *sh = (stm_header *)t->young_shadows.items[i + 1];
        if (!(sh->flags & F_SHADOW))
            continue;
        if (y->flags & F_MOVED) {
            sh->tid = y->tid;
            sh->revision = y->revision;
            sh->flags = F_MOVED;
        } else {
            gc_old_free(t, sh, gc_object_size(y));
        }
    }
    stm_vec_clear(&t->young_shadows);
    /* Objects with finalizers: survivors are tracked by their original,
     * the dead are finalized now (their memory is intact until zeroed). */
    for (size_t i = 0; i < t->young_finalizable.count; i++) {
        stm_header *y = (stm_header *)t->young_finalizable.items[i];
        if (y->flags & F_MOVED) {
            stm_header *n = (stm_header *)y->revision;
            uintptr_t orig = gc_original_of(n);
            stm_vec_push_reserved(&t->old_finalizable, orig ? orig : (uintptr_t)n);
            continue;
        }
        stm_finalizer_fn *fn = gc_finalizer_for(y->tid);
        if (fn)
            fn(y);
        stm_stat(t, STAT_finalizers_run, 1);
    }
    stm_vec_clear(&t->young_finalizable);

    /* Weak-ish references: the read set and the read cache only matter for
     * objects that survived. */
    size_t kept = 0;
    for (size_t i = 0; i < t->read_set.count; i++) {
        void *p = survivor(t, (void *)t->read_set.items[i]);
        if (p)
            t->read_set.items[kept++] = (uintptr_t)p;
    }
    t->read_set.count = kept;
    kept = 0;
    for (size_t i = 0; i < t->cache_fills.count; i++) {
        const void *key = (const void *)t->cache_fills.items[i];
        stm__cache_entry *e = stm_cache_find(t, key);
        if (!e)
            continue;
        void *v = survivor(t, e->value);
        if (stm_is_young(t, key) || !v) {
            e->key = NULL;
            continue;
        }
        /* A young copy of ours that a thief published forwards to a
         * public copy.  Keeping key -> public copy would be an alias that
         * cache_aliases does not log, so a later write that copies that
         * public copy could not redirect it (C3) and reads through `key`
         * would miss our own writes (found by the random tester): drop it,
         * the next read resolves it again. */
        if (v != e->value && (stm_load_relaxed(&((stm_header *)v)->flags) & F_PUBLIC)) {
            e->key = NULL;
            continue;
        }
        e->value = v;
        t->cache_fills.items[kept++] = (uintptr_t)key;
    }
    t->cache_fills.count = kept;
    kept = 0;
    for (size_t i = 0; i < t->cache_aliases.count; i++) {
        const void *key = (const void *)t->cache_aliases.items[i];
        stm__cache_entry *e = stm_cache_find(t, key);
        if (e && e->value != key)
            t->cache_aliases.items[kept++] = (uintptr_t)key;
    }
    t->cache_aliases.count = kept;

    /* Reset the nursery; it is zeroed again as it is handed out (see
     * zero_ahead). */
    char *used_end = t->tl->nursery_cur;
    stm_account_allocation(t);
    t->tx_alloc_done += (uint64_t)(used_end - t->tx_alloc_mark);
#if STM_DEBUG > 0
    /* Make stale pointers into the old nursery contents fail loudly. */
    memset(t->nursery_base, 0xdd, (size_t)(used_end - t->nursery_base));
#endif
#ifdef GC_POISON_NURSERY
    memset(t->nursery_base, 0, (size_t)(used_end - t->nursery_base));
    POISON(t->nursery_base, (size_t)(used_end - t->nursery_base));
#else
    t->nursery_zeroed = t->nursery_base;
#endif
    t->tl->nursery_cur = t->nursery_base;
    t->tx_alloc_mark = t->nursery_base;
    t->stats_alloc_mark = t->nursery_base;
    if (t->state != TX_NONE)
        t->tl->nursery_end = gc_nursery_alloc_end(t);
    stm_stat(t, STAT_minor_collections, 1);
    stm_stat(t, STAT_bytes_promoted, cx.promoted);
    stm_unlock(t);
    return true;
}

void *stm__allocate_slow(size_t size, uint32_t tid)
{
    stm_thread *t = stm_me;
    if (!t)
        stm_fatal("stm_allocate: the calling thread is not attached (call stm_thread_attach)");
    if (t->state == TX_NONE)
        stm_fatal("stm_allocate called outside a transaction");
    if (size < sizeof(stm_header))
        stm_fatal("stm_allocate: size %zu is smaller than the object header (%zu bytes)", size,
                  sizeof(stm_header));
    if (size > STM_MAX_OBJECT_SIZE) {
        if (t->state == TX_INEVITABLE)
            return NULL;
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
    }
    size_t rounded = stm_round_size(size);
    stm_header *h;
    /* A safe point where C locals are dead (the contract of allocation). */
    gc_safe_point(t, GC_STOPPED_FREE);
    if (rounded > stm_g.large_threshold) {
        gc_maybe_major(t);
        h = gc_old_alloc(t, rounded);
        if (!h) {
            /* Out of memory or over the heap limit: collect and retry once. */
            gc_major_collect(t, GC_STOPPED_FREE, true);
            h = gc_old_alloc(t, rounded);
        }
        if (!h) {
            gc_out_of_memory(rounded);
            if (t->state == TX_INEVITABLE)
                return NULL;
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
        }
        /* Old and private: trace it at the next minor collection, since
         * its fields may come to point into the nursery. */
        if (!stm_vec_push(&t->old_to_trace, (uintptr_t)h)) {
            if (t->state == TX_INEVITABLE)
                return NULL;
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
        }
    } else {
#ifdef GC_POISON_NURSERY
        /* Room left below the real limit: no collection (see above). */
        if ((size_t)(t->nursery_limit - t->tl->nursery_cur) >= rounded) {
            h = (stm_header *)t->tl->nursery_cur;
            UNPOISON(h, rounded);
            t->tl->nursery_cur += rounded;
            t->tl->nursery_end = t->tl->nursery_cur;
            h->tid = tid;
            h->revision = t->prn;
            return h;
        }
#endif
#ifndef GC_POISON_NURSERY
        /* Room left, but not yet cleared (see zero_ahead). */
        if ((size_t)(t->nursery_limit - t->tl->nursery_cur) >= rounded) {
            h = (stm_header *)t->tl->nursery_cur;
            zero_ahead(t, (char *)h + rounded);
            t->tl->nursery_cur += rounded;
            t->tl->nursery_end = gc_nursery_alloc_end(t);
            h->tid = tid;
            h->revision = t->prn;
            return h;
        }
#endif
        bool ok = gc_minor_collect(t);
        if (!ok) {
            gc_major_collect(t, GC_STOPPED_FREE, true);
            ok = gc_minor_collect(t);
        } else {
            gc_maybe_major(t);
        }
        if (!ok) {
            gc_out_of_memory(stm_round_size(size));
            if (t->state == TX_INEVITABLE)
                return NULL;
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
        }
        h = (stm_header *)t->tl->nursery_cur;
        UNPOISON(h, rounded);
        zero_ahead(t, (char *)h + rounded);
        t->tl->nursery_cur += rounded;
        t->tl->nursery_end = gc_nursery_alloc_end(t);
    }
    h->tid = tid;
    h->revision = t->prn;
    if (rounded > stm_g.large_threshold)
        stm_stat(t, STAT_bytes_allocated, rounded);
    return h;
}

STM_API void stm_minor_collect(void)
{
    stm_thread *t = stm_me;
    if (!t)
        stm_fatal("stm_minor_collect: the calling thread is not attached (call stm_thread_attach)");
    if (t->state == TX_NONE)
        stm_fatal("stm_minor_collect called outside a transaction");
    if (!gc_minor_collect(t) && t->state != TX_INEVITABLE)
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
    /* An inevitable transaction cannot abort: the collection is skipped,
     * which is harmless (it was only requested). */
}
