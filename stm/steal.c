/* steal.c -- reaching another thread's protected objects (docs/DESIGN.md,
 * "Stealing").
 *
 * A thread T that reaches an object P protected by thread F (through a
 * stub, or through raw memory) never reads P's fields without F's
 * collection lock, and never writes them at all.  Under the lock it copies
 * P's committed state (P itself, or P's backup if F is modifying P right
 * now) into a new public copy in T's old space, replacing references to
 * F's non-public objects by stubs.  Then:
 *   - if F is not modifying P, P becomes a forwarder (F_MOVED) to the copy;
 *   - if F is, the pair (copy, P) is queued for F, whose commit will then
 *     lock the copy and chain it to P's new version like any public write,
 *     and whose abort will turn P into a forwarder instead.
 * F is never stopped: it only waits for the lock if it needs it at the
 * same moment (write-barrier slow path, commit, abort, minor collection). */
#include <string.h>

#include "stm/core.h"
#include "stm/elide.h"
#include "gc/pages.h"

bool stm_init_stub(stm_thread *me, stm_stub *s, stm_thread *owner, void *target)
{
    (void)me;
    const stm_header *th = target;
    s->hdr.tid = th->tid;
    s->hdr.flags = F_PUBLIC | F_STUB;
    s->hdr.ident = 0;
    s->owner = owner->index;
    s->hdr.revision = (intptr_t)target | 2;
    if (stm_is_young(owner, target)) {
        /* The owner's minor collection re-points the stub when the target
         * moves (owner's lock held by the caller). */
        if (!stm_vec_push(&owner->young_stubs, (uintptr_t)s))
            return false;
    }
    stm_stat(me, STAT_stubs_created, 1);
    return true;
}

stm_stub *stm_make_stub(stm_thread *me, stm_thread *owner, void *target)
{
    stm_stub *s = gc_old_alloc(me, sizeof(stm_stub));
    if (s && !stm_init_stub(me, s, owner, target)) {
        gc_old_free(me, s, sizeof(stm_stub));
        return NULL;
    }
    return s;
}

typedef struct translate_ctx {
    stm_thread *me, *owner;
    bool failed;
} translate_ctx;

/* A field of a new public copy: references to the owner's non-public
 * objects become stubs, public references stay. */
static void translate_field(void **field, void *ctx)
{
    translate_ctx *cx = ctx;
    stm_header *q = *field;
    if (!q || cx->failed)
        return;
    uint32_t flags = stm_load_relaxed(&q->flags);
    if (flags & F_PUBLIC)
        return;
    if (flags & F_MOVED) {
        *field = (void *)stm_load_relaxed(&q->revision);
        /* I4: the forward is a thief's public copy.  A minor collection's
         * forwards (to the owner's promoted, non-public copies) are gone
         * before anyone can take the owner's lock again. */
        STM_ASSERT(stm_load_relaxed(&((const stm_header *)*field)->flags) & F_PUBLIC);
        return;
    }
    stm_stub *s = stm_make_stub(cx->me, cx->owner, q);
    if (!s) {
        cx->failed = true;
        return;
    }
    *field = s;
}

void *stm_publish_locked(stm_thread *me, stm_thread *owner, void *obj)
{
    stm_header *p = obj;
    uint32_t flags = stm_load_relaxed(&p->flags);
    intptr_t rev = stm_load_relaxed(&p->revision);
    if (flags & F_PUBLIC)
        return p;
    if (flags & F_MOVED)
        return (void *)rev;
    const stm_header *src = p;
    bool modifying = (flags & F_PFP) != 0;
    if (modifying) {
        src = (const stm_header *)p->ident;    /* the backup: committed state */
        /* Stolen already during this transaction of the owner: one public
         * copy per committed state, or two chains would diverge. */
        if (stm_load_relaxed(&src->flags) & F_MOVED)
            return (void *)stm_load_relaxed(&src->revision);
    }
    else if (rev == stm_load_relaxed(&owner->prn) && stm_load_relaxed(&owner->state) != TX_NONE) {
        /* Release the owner first: a handler that does not end the process
         * must not leave it locked out of its own collections. */
        stm_unlock(owner);
        stm_fatal("thread %u reached object %p that thread %u created in its running "
                  "transaction: uncommitted objects must not escape through non-stm memory",
                  me->index, (void *)p, owner->index);
    }
    size_t size = gc_object_size(src);
    stm_header *copy = gc_old_alloc(me, size);
    if (!copy)
        return NULL;
    memcpy(copy, src, size);
    uint32_t src_flags = stm_load_relaxed(&src->flags);
    copy->flags = F_PUBLIC | (modifying ? F_PUBLIC_TO_PRIVATE : 0) | (src_flags & F_WEAKREF);
    copy->ident = src->ident ? src->ident : (stm_is_young(owner, p) ? 0 : (uintptr_t)p);
    copy->revision = stm_current_stamp();
    translate_ctx cx = { me, owner, false };
    if (src_flags & F_WEAKREF)
        translate_field((void **)(copy + 1), &cx);   /* the target, weakly held */
    else
        gc_trace_client(copy, translate_field, &cx);
    if (cx.failed) {
        gc_old_free(me, copy, size);
        return NULL;
    }
    if (modifying) {
        if (!stm_vec_reserve(&owner->stolen, 2)) {
            gc_old_free(me, copy, size);
            return NULL;
        }
        size_t n = owner->stolen.count;
        owner->stolen.items[n] = (uintptr_t)copy;
        owner->stolen.items[n + 1] = (uintptr_t)p;
        /* Relaxed: the owner polls the count without the lock, and takes
         * the lock before reading the items. */
        stm_store_relaxed(&owner->stolen.count, n + 2);
        /* Marks the backup, under the owner's lock; an abort that copies
         * the backup back makes p itself a forwarder to `copy`. */
        stm_header *backup = (stm_header *)p->ident;
        backup->flags |= F_MOVED;
        backup->revision = (intptr_t)copy;
        /* A young object without an original yet: the copy becomes its
         * original, so that p (which lives on) keeps the same identity. */
        if (!copy->ident)
            backup->ident = (uintptr_t)copy;
    } else {
        /* The flag first, then the pointer with release: a reader that
         * sees the pointer (acquire) also sees F_MOVED and the copy. */
        stm_fetch_or_relaxed(&p->flags, F_MOVED);
        stm_store_release(&p->revision, (intptr_t)copy);
    }
    if (owner != me)
        stm_stat(me, STAT_steals, 1);
    /* Relaxed: the owner only compares it with what it saw last. */
    stm_store_relaxed(&owner->stolen_from_me, owner->stolen_from_me + 1);
    return copy;
}

void *stm_steal(stm_thread *me, const void *obj_or_stub, unsigned owner_index)
{
    if (owner_index == 0 || owner_index > stm_g.cfg.max_threads)
        stm_fatal("corrupt object %p: bad owner %u", obj_or_stub, owner_index);
    stm_thread *owner = stm_thread_by_index(owner_index);
    if (!owner)
        stm_fatal("corrupt object %p: owner %u never existed", obj_or_stub, owner_index);
    stm_header *h = (stm_header *)obj_or_stub;
    stm_elide_lock_hooked(owner, STM_POINT_STEAL_LOCKED);   /* DESIGN.md, 12 */
    STM_TEST_POINT(STM_POINT_STEAL_LOCKED);
    stm_header *target = h;
    bool via_stub = (stm_load_relaxed(&h->flags) & F_STUB) != 0;
    if (via_stub) {
        /* Acquire, though we hold the owner's lock: a stub already stolen
         * is a public forwarder, and path compression re-points those
         * without the lock (CAS release in stm_resolve's compress); this
         * pairs with it, and with the release store below.  Relaxed let
         * us read a copy another thread had just finished (found by TSan
         * in intset, a thief's fresh copy read without ordering). */
        intptr_t rev = stm_load_acquire(&h->revision);
        if (!REV_IS_STUBPTR(rev)) {      /* someone stole it meanwhile */
            stm_elide_unlock(owner);
            return (void *)rev;
        }
        target = (stm_header *)(rev & ~(intptr_t)3);
    }
    void *copy = stm_publish_locked(me, owner, target);
    if (copy && via_stub) {
        /* Later readers of the stub go straight to the public copy.
         * Release pairs with the acquire load in stm_resolve. */
        stm_store_release(&h->revision, (intptr_t)copy);
    }
    stm_elide_unlock(owner);
    if (!copy)
        stm_abort_tx(me, STM_ABORT_OUT_OF_MEMORY, obj_or_stub);
    return copy;
}

void stm_drain_stolen(stm_thread *t)
{
    for (size_t i = 0; i < t->stolen.count; i += 2) {
        if (!stm_map_put(&t->p2p, t->stolen.items[i], t->stolen.items[i + 1]))
            stm_fatal("out of memory while recording a stolen object");
    }
    stm_vec_clear(&t->stolen);
}

STM_API void *stm_publish(void *obj)
{
    stm_thread *t = stm_me;
    if (!t || !obj)
        return NULL;
    stm_header *h = obj;
    if (t->state == TX_REGULAR)
        return NULL;
    if (t->state == TX_INEVITABLE &&
        (h->revision == t->prn || (stm_load_relaxed(&h->flags) & F_PFP)))
        return NULL;    /* written by the running transaction: not committed */
    unsigned owner = gc_owner_of(obj);
    if (stm_load_relaxed(&h->flags) & F_PUBLIC) {
        /* Follow to the newest public copy; stubs are resolved by readers. */
        return obj;
    }
    if (owner != t->index)
        return NULL;
    /* Outside a transaction we are parked: publishing writes the heap. */
    bool parked = t->state == TX_NONE;
    if (parked)
        gc_unpark(t);
    stm_lock(t);
    void *copy = stm_publish_locked(t, t, obj);
    stm_unlock(t);
    if (parked)
        gc_park(t, GC_PARKED);
    return copy;
}
