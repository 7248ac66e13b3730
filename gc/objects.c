/* objects.c -- identity, weak references and finalizable objects
 * (docs/DESIGN.md, section 13.6).
 *
 * Identity is the address of an object's *original*: the first old copy
 * it ever had.  Every later copy (a thief's public copy, a private copy
 * made by a write, a promoted copy) carries it in `ident`, and the major
 * collector keeps the original allocated while any copy lives, moving the
 * newest public contents back into it when it compacts.  A young object
 * has no original yet: asking for its id reserves one (a "shadow" block
 * in old space), into which the minor collection then moves it. */
#include <string.h>

#include "gc/pages.h"


static pthread_mutex_t finalizers_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t layouts_mutex = PTHREAD_MUTEX_INITIALIZER;

uintptr_t gc_original_of(const stm_header *h)
{
    /* Relaxed: the flags of a public copy get hint bits from other
     * threads at any time (atomically); ident does not change here. */
    uintptr_t id = stm_load_relaxed(&h->ident);
    if (stm_load_relaxed(&h->flags) & F_PFP)
        id = ((const stm_header *)id)->ident;     /* ident is the backup */
    if (id)
        return id;
    return gc_is_any_nursery(h) ? 0 : (uintptr_t)h;
}

static stm_thread *in_tx_or_die(const char *what)
{
    stm_thread *t = stm_me;
    if (!t)
        stm_fatal("%s: the calling thread is not attached (call stm_thread_attach)", what);
    if (t->state == TX_NONE)
        stm_fatal("%s called outside a transaction", what);
    return t;
}

STM_API uintptr_t stm_id(const void *obj)
{
    stm_thread *t = in_tx_or_die("stm_id");
    if (!obj)
        return 0;
    stm_header *c = stm_read(obj);
    uintptr_t id = gc_original_of(c);
    if (id)
        return id;
    /* A young original: reserve the old address it will move to. */
    size_t size = gc_object_size(c);
    stm_header *shadow = stm_vec_reserve(&t->young_shadows, 2) ? gc_old_alloc(t, size) : NULL;
    if (!shadow) {
        gc_out_of_memory(size);
        if (t->state == TX_INEVITABLE)
            return 0;
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, obj);
    }
    /* Under our lock: a thief copying c reads its ident (or its backup's)
     * to give the copy the same identity, and may have given c an
     * original since we looked (stealing makes the copy the original). */
    stm_lock(t);
    if (stm_load_relaxed(&c->flags) & F_MOVED)
        id = gc_original_of((const stm_header *)stm_load_relaxed(&c->revision));
    else
        id = gc_original_of(c);
    if (id) {
        stm_unlock(t);
        gc_old_free(t, shadow, size);
        return id;
    }
    shadow->tid = c->tid;
    shadow->flags = F_SHADOW;
    stm_vec_push_reserved(&t->young_shadows, (uintptr_t)c);
    stm_vec_push_reserved(&t->young_shadows, (uintptr_t)shadow);
    if (c->flags & F_PFP)
        ((stm_header *)c->ident)->ident = (uintptr_t)shadow;
    else
        c->ident = (uintptr_t)shadow;
    stm_unlock(t);
    return (uintptr_t)shadow;
}

STM_API uint64_t stm_hash(const void *obj)
{
    uint64_t x = stm_id(obj);
    /* splitmix64's finaliser: addresses differ in few, low-entropy bits. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

STM_API int stm_id_equal(const void *a, const void *b)
{
    in_tx_or_die("stm_id_equal");
    if (a == b)
        return 1;
    if (!a || !b)
        return 0;
    const stm_header *ca = stm_read(a), *cb = stm_read(b);
    if (ca == cb)
        return 1;
    /* A young object without an original has no other copy. */
    uintptr_t oa = gc_original_of(ca), ob = gc_original_of(cb);
    return oa && oa == ob;
}

STM_API void *stm_weakref_new(void *target)
{
    in_tx_or_die("stm_weakref_new");
    stm_push_root(target);
    gc_weakref *w = stm_allocate(sizeof(gc_weakref), STM_TID_WEAKREF);
    target = stm_pop_root();
    if (!w)
        return NULL;     /* inevitable transaction out of memory */
    /* Fresh and private: no one else sees the header yet. */
    w->hdr.flags |= F_WEAKREF;
    w->target = target;
    return w;
}

STM_API void *stm_weakref_get(const void *ref)
{
    stm_thread *t = in_tx_or_die("stm_weakref_get");
    if (!ref)
        stm_fatal("stm_weakref_get called on NULL");
    const gc_weakref *w = stm_read(ref);
    if (!(stm_load_relaxed(&w->hdr.flags) & F_WEAKREF))
        stm_fatal("stm_weakref_get: %p is not a weak reference (tid %u)", ref, w->hdr.tid);
    void *target = w->target;
    /* The caller holds the target in a C local, like a field it read, but
     * no strong reference we trace may lead to it: a major collection at
     * the next barrier slow path would free it.  Young targets are roots
     * of every major collection anyway (DESIGN.md 13.7).  Asking twice in
     * a row for the same target (a loop) lists it once. */
    stm_vec *gets = &t->tx_weak_gets;
    if (target && !stm_is_young(t, target) &&
        !(gets->count && gets->items[gets->count - 1] == (uintptr_t)target) &&
        !stm_vec_push(gets, (uintptr_t)target))
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, ref);
    return target;
}

/* ---- finalizers ------------------------------------------------------ */

stm_finalizer_fn *gc_finalizer_for(uint32_t tid)
{
    stm_finalizer_fn *fn = NULL;
    pthread_mutex_lock(&finalizers_mutex);
    for (size_t i = 0; i < stm_g.finalizers.count; i += 2)
        if (stm_g.finalizers.items[i] == tid)
            fn = (stm_finalizer_fn *)stm_g.finalizers.items[i + 1];
    pthread_mutex_unlock(&finalizers_mutex);
    return fn;
}

STM_API int stm_register_finalizer(uint32_t tid, stm_finalizer_fn *fn)
{
    if (!fn || tid == STM_TID_WEAKREF)
        return STM_EINVAL;
    int rc = STM_OK;
    pthread_mutex_lock(&finalizers_mutex);
    size_t i;
    for (i = 0; i < stm_g.finalizers.count; i += 2)
        if (stm_g.finalizers.items[i] == tid)
            break;
    if (i < stm_g.finalizers.count)
        stm_g.finalizers.items[i + 1] = (uintptr_t)fn;
    else if (stm_vec_reserve(&stm_g.finalizers, 2)) {
        stm_vec_push_reserved(&stm_g.finalizers, tid);
        stm_vec_push_reserved(&stm_g.finalizers, (uintptr_t)fn);
    } else
        rc = STM_ENOMEM;
    pthread_mutex_unlock(&finalizers_mutex);
    return rc;
}

STM_API void *stm_allocate_finalizable(size_t size, uint32_t tid)
{
    stm_thread *t = in_tx_or_die("stm_allocate_finalizable");
    if (!gc_finalizer_for(tid))
        stm_fatal("stm_allocate_finalizable: type %u has no finalizer (stm_register_finalizer)",
                  tid);
    /* Room in both lists first: once allocated, the object must be
     * tracked.  A collection in stm_allocate keeps the capacity. */
    if (!stm_vec_reserve(&t->young_finalizable, 1) || !stm_vec_reserve(&t->old_finalizable, 1)) {
        if (t->state == TX_INEVITABLE)
            return NULL;
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
    }
    stm_header *h = stm_allocate(size, tid);
    if (!h)
        return NULL;
    if (stm_is_young(t, h))
        stm_vec_push_reserved(&t->young_finalizable, (uintptr_t)h);
    else
        stm_vec_push_reserved(&t->old_finalizable, (uintptr_t)h);
    return h;
}

/* ---- layouts --------------------------------------------------------- */

STM_API int stm_register_layout(uint32_t tid, size_t size, const size_t *offsets, size_t count)
{
    if (!stm_g.initialised || (stm_me && stm_me->state != TX_NONE))
        return STM_ESTATE;
    if (tid > STM_LAYOUT_MAX_TID || size < sizeof(stm_header) || size > STM_LAYOUT_MAX_SIZE ||
        (count && !offsets))
        return STM_EINVAL;
    uint64_t pointers = 0;
    for (size_t i = 0; i < count; i++) {
        size_t off = offsets[i];
        if (off % sizeof(void *) || off < sizeof(stm_header) || off > size - sizeof(void *))
            return STM_EINVAL;
        uint64_t bit = (uint64_t)1 << (off / sizeof(void *));
        if (pointers & bit)
            return STM_EINVAL;
        pointers |= bit;
    }
    int rc = STM_OK;
    pthread_mutex_lock(&layouts_mutex);   /* one writer per entry */
    stm_layout *l = &stm_g.layouts[tid];
    if (stm_load_relaxed(&l->size)) {
        if (l->size != size || l->pointers != pointers)
            rc = STM_ESTATE;
    } else {
        stm_store_relaxed(&l->pointers, pointers);
        /* Release: pairs with the acquire load in stm_layout_of; a
         * collector that sees the size sees the mask. */
        stm_store_release(&l->size, (uint32_t)size);
    }
    pthread_mutex_unlock(&layouts_mutex);
    return rc;
}

void gc_trace_by_callback(void *obj, stm_visit_fn *visit, void *ctx)
{
    if (!stm_g.cfg.trace)
        stm_fatal("object %p has type %u, which has no layout (stm_register_layout), and "
                  "stm_config.trace is NULL",
                  obj, ((const stm_header *)obj)->tid);
    stm_g.cfg.trace(obj, visit, ctx);
}

size_t gc_size_by_callback(const void *obj)
{
    if (!stm_g.cfg.object_size)
        stm_fatal("object %p has type %u, which has no layout (stm_register_layout), and "
                  "stm_config.object_size is NULL",
                  obj, ((const stm_header *)obj)->tid);
    return stm_g.cfg.object_size(obj);
}

#if STM_DEBUG > 0
static void collect_offset(void **field, void *ctx)
{
    uintptr_t *a = ctx;   /* [0]: the object, [1]: the mask so far */
    size_t off = (size_t)((uintptr_t)field - a[0]);
    if (off % sizeof(void *) || off >= STM_LAYOUT_MAX_SIZE)
        a[1] = ~(uintptr_t)0;   /* cannot be a layout's mask */
    else
        a[1] |= (uintptr_t)1 << (off / sizeof(void *));
}

/* Debug builds: a layout that disagrees with the callbacks is the
 * client's bug, reported before it corrupts anything. */
void gc_check_layout(const void *obj, const stm_layout *l)
{
    uint32_t tid = ((const stm_header *)obj)->tid;
    if (stm_g.cfg.object_size) {
        size_t by_callback = stm_g.cfg.object_size(obj);
        if (by_callback != l->size)
            stm_fatal("type %u: stm_register_layout said %u bytes, object_size says %zu for %p",
                      tid, l->size, by_callback, obj);
    }
    if (stm_g.cfg.trace) {
        uintptr_t a[2] = { (uintptr_t)obj, 0 };
        stm_g.cfg.trace((void *)obj, collect_offset, a);
        if (a[1] != l->pointers)
            stm_fatal("type %u: stm_register_layout names pointer words %#llx, the trace "
                      "callback visits %#llx for %p",
                      tid, (unsigned long long)l->pointers, (unsigned long long)a[1], obj);
    }
}
#endif
