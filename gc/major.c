/* major.c -- the major collection of the old generation (docs/DESIGN.md,
 * section 13).
 *
 * One thread (the one whose allocation found the heap grown, or that
 * called stm_major_collect) becomes the collector.  It raises
 * gc_requested and waits until every attached thread is parked (outside
 * transactions, or blocked) or stopped at a safe point; no thread has to
 * finish its transaction.  With the world stopped it marks from every
 * root, clears dead weak references, runs finalizers, optionally compacts
 * public version chains into the objects' original addresses, and sweeps
 * every thread's old pages.  Nurseries are not collected: every young
 * object is a root (their owners' minor collections reclaim them).
 *
 * Compaction frees outdated copies that the program may still hold in C
 * locals if a thread stopped where locals stay valid (a barrier slow path,
 * stm_should_break, a blocking wait in a transaction).  Such a collection
 * only marks and sweeps; the next one compacts. */
#include <string.h>
#include <time.h>

#include "gc/pages.h"

int gc_requested;
static pthread_mutex_t gc_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cond = PTHREAD_COND_INITIALIZER;
static gc_histogram major_pauses;     /* under gc_mutex; read racily for stats */
static uint64_t live_after_major;
static __thread bool in_finalizer;

/* ---- time and pause histograms ----------------------------------------- */

uint64_t gc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned hist_bucket(uint64_t ns)
{
    if (ns < GC_HIST_SUB)
        return (unsigned)ns;
    unsigned e = 63 - (unsigned)__builtin_clzll(ns);          /* >= 4 */
    unsigned sub = (unsigned)(ns >> (e - 4)) & (GC_HIST_SUB - 1);
    return (e - 3) * GC_HIST_SUB + sub;
}

/* The middle of bucket b's range. */
static uint64_t hist_value(unsigned b)
{
    if (b < GC_HIST_SUB)
        return b;
    unsigned e = b / GC_HIST_SUB + 3, sub = b % GC_HIST_SUB;
    uint64_t low = (uint64_t)(GC_HIST_SUB + sub) << (e - 4);
    return low + (((uint64_t)1 << (e - 4)) >> 1);
}

void gc_histogram_add(gc_histogram *h, uint64_t ns)
{
    /* Written by one thread (owner, or the collector under gc_mutex);
     * read by stm_get_gc_stats from anywhere: relaxed counters. */
    stm_counter_add(&h->count[hist_bucket(ns)], 1);
    stm_counter_add(&h->n, 1);
    stm_counter_add(&h->total, ns);
    if (ns > stm_load_relaxed(&h->max))
        stm_store_relaxed(&h->max, ns);
}

/* Merges `src` into `dst` (a private copy). */
static void hist_merge(gc_histogram *dst, const gc_histogram *src)
{
    for (unsigned b = 0; b < GC_HIST_BUCKETS; b++)
        dst->count[b] += stm_load_relaxed(&src->count[b]);
    dst->n += stm_load_relaxed(&src->n);
    dst->total += stm_load_relaxed(&src->total);
    uint64_t m = stm_load_relaxed(&src->max);
    if (m > dst->max)
        dst->max = m;
}

static uint64_t hist_percentile(const gc_histogram *h, unsigned permille)
{
    uint64_t n = 0;
    for (unsigned b = 0; b < GC_HIST_BUCKETS; b++)
        n += h->count[b];
    if (n == 0)
        return 0;
    uint64_t rank = (n * permille + 999) / 1000;    /* 1-based, ceiling */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < GC_HIST_BUCKETS; b++) {
        seen += h->count[b];
        if (seen >= rank) {
            uint64_t v = hist_value(b);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- the rendezvous ------------------------------------------------------ */

static void notify_collector(void)
{
    pthread_mutex_lock(&gc_mutex);
    pthread_cond_broadcast(&gc_cond);
    pthread_mutex_unlock(&gc_mutex);
}

void gc_park(stm_thread *t, int state)
{
    /* The depth at which we park: what lies below is the stack a
     * collection may scan while we are away (DESIGN.md 13.2). */
    t->park_top = t->tl ? t->tl->ss_top : NULL;
    /* Seq_cst store then seq_cst load, against the collector's seq_cst
     * store of gc_requested then load of gc_state (a Dekker handshake):
     * either it sees us parked, or we see its request and wake it. */
    stm_store_seq_cst(&t->gc_state, state);
    if (stm_load_seq_cst(&gc_requested))
        notify_collector();
}

static void wait_for_collection(void)
{
    /* gc_mutex held. */
    while (stm_load_relaxed(&gc_requested))
        pthread_cond_wait(&gc_cond, &gc_mutex);
}

void gc_unpark(stm_thread *t)
{
    int parked = t->gc_state;
    for (;;) {
        /* Pairs with the collector's seq_cst store/load (see gc_park). */
        stm_store_seq_cst(&t->gc_state, GC_RUNNING);
        if (!stm_load_seq_cst(&gc_requested))
            return;
        /* A collection is starting or running: step back until it ends. */
        pthread_mutex_lock(&gc_mutex);
        stm_store_relaxed(&t->gc_state, parked);
        pthread_cond_broadcast(&gc_cond);
        wait_for_collection();
        pthread_mutex_unlock(&gc_mutex);
    }
}

static void abort_if_doomed(stm_thread *t)
{
    stm_abort_reason why = t->gc_doomed;
    if (why != STM_ABORT_REASON_COUNT) {
        t->gc_doomed = STM_ABORT_REASON_COUNT;
        stm_abort_tx(t, why, NULL);
    }
}

void gc_stop_slow(stm_thread *t, int state)
{
    if (in_finalizer)
        return;
    pthread_mutex_lock(&gc_mutex);
    if (stm_load_relaxed(&gc_requested)) {
        stm_store_relaxed(&t->gc_state, state);
        pthread_cond_broadcast(&gc_cond);
        wait_for_collection();
        stm_store_relaxed(&t->gc_state, GC_RUNNING);
    }
    pthread_mutex_unlock(&gc_mutex);
    abort_if_doomed(t);
}

STM_HIDDEN void gc_check_doomed(stm_thread *t);
void gc_check_doomed(stm_thread *t)
{
    abort_if_doomed(t);
}

/* ---- marking ---------------------------------------------------------------- */

typedef struct major_ctx {
    stm_vec stack;          /* marked, not yet traced */
    stm_vec marked;         /* every marked heap object (compaction only) */
    stm_vec statics;        /* marked objects outside GC memory */
    stm_vec weak;           /* weak references met */
    stm_vec scratch;        /* rekeying write sets (reserved before compacting) */
    bool want_list;         /* fill `marked` */
    size_t candidates;      /* marked copies compaction would act on */
    bool oom;               /* a list could not grow: give up this collection */
    gc_sweep_result swept;
    uint64_t weak_cleared, finalized, compacted;
} major_ctx;

/* See collect(): compaction waits for 1 in this many marked copies. */
#define GC_COMPACT_RATIO 64

static major_ctx cx_static;   /* reused between collections (under gc_mutex) */

static inline bool is_young(const void *p)
{
    return gc_is_any_nursery(p);
}

static void push(major_ctx *cx, stm_vec *v, const void *p)
{
    if (!stm_vec_push(v, (uintptr_t)p))
        cx->oom = true;
}

/* Sets F_MARK on an unmarked old block (slot: its chunk's) and counts
 * it in its page, so that the sweep can pool pages with no mark unwalked.
 * The only two places that mark old blocks go through here. */
static inline void set_mark(stm_header *h, uint32_t f, const gc_chunk_slot *sl)
{
    h->flags = f | F_MARK;
    gc_page *pg = gc_page_of(sl, h);
    if (pg)
        pg->marked++;
}

static void mark_obj(major_ctx *cx, const void *p)
{
    if (!p)
        return;
    const gc_chunk_slot *sl = gc_chunk_slot_of(p);
    unsigned entry = sl ? stm_load_relaxed(&sl->entry) : 0;
    if (entry & GC_CHUNK_NURSERY)
        return;                       /* young objects are all roots */
    stm_header *h = (stm_header *)p;
    uint32_t f = h->flags;
    if (f & F_MARK)
        return;
    STM_ASSERT(!(f & F_FREE));
    if (entry == 0) {
        /* A static object is recorded before it is marked: its mark must
         * be undone even if this collection gives up. */
        if (!stm_vec_push(&cx->statics, (uintptr_t)p)) {
            cx->oom = true;
            return;
        }
        h->flags = f | F_MARK;
    } else {
        set_mark(h, f, sl);
    }
    if (f & F_SHADOW)
        return;                       /* a reserved address: nothing inside */
    push(cx, &cx->stack, p);
}

/* A block that must stay allocated but holds no object yet. */
static void mark_raw(const void *p)
{
    stm_header *h = (stm_header *)p;
    if (!(h->flags & F_MARK))
        set_mark(h, h->flags, gc_chunk_slot_of(p));
}

static void mark_visit(void **field, void *ctx)
{
    mark_obj(ctx, *field);
}

static bool is_outdated_public(const stm_header *h);

/* Everything one copy keeps alive: its fields, the newer copy its
 * revision names, its backup or its original.  Not the fields of a copy
 * that only forwards (same content as its target), nor those of an
 * outdated public copy: the one reader that may still follow them is a
 * running transaction that read the copy while it was current, and such
 * a copy is in its read set or write set, where mark_read keeps its
 * fields alive (and pinned).  Tracing them for everyone would let any
 * outdated copy that stays reachable -- a prebuilt object, an original
 * kept as identity -- keep what its old state referenced alive for good
 * (test_major.c, weakref_cleared_after_a_stolen_target_is_dropped). */
static void trace_copy(major_ctx *cx, stm_header *h, bool young)
{
    uint32_t f = h->flags;
    intptr_t rev = h->revision;
    /* Without the list compaction is skipped, nothing else is lost. */
    if (cx->want_list && !young) {
        if (!stm_vec_push(&cx->marked, (uintptr_t)h))
            cx->want_list = false;
        /* Stubs, forwarders, outdated public copies and public copies
         * that are not their own original: without any, compaction would
         * find nothing to forward, relocate or free (fwd() is the
         * identity on every marked object), so it is skipped. */
        if ((f & (F_STUB | F_MOVED)) ||
            ((f & F_PUBLIC) && (REV_IS_PTR(rev) || (h->ident && h->ident != (uintptr_t)h))))
            cx->candidates++;
    }
    if (f & F_STUB) {
        if (REV_IS_STUBPTR(rev) || REV_IS_PTR(rev))
            mark_obj(cx, (void *)(rev & ~(intptr_t)3));
        return;
    }
    if (f & F_WEAKREF)
        push(cx, &cx->weak, h);
    else if (!(f & F_MOVED) && !is_outdated_public(h))
        gc_trace_client(h, mark_visit, cx);
    if (REV_IS_PTR(rev))
        mark_obj(cx, (void *)rev);
    if (h->ident) {
        /* A backup (written in place), or the original, which must
         * outlive its copies: it is the object's identity. */
        stm_header *o = (stm_header *)h->ident;
        mark_obj(cx, o);
        if (!(f & F_PFP) && !is_young(o))
            o->flags |= F_ORIGINAL;
    }
}

static void drain(major_ctx *cx)
{
    while (cx->stack.count && !cx->oom) {
        stm_header *h = (stm_header *)cx->stack.items[--cx->stack.count];
        trace_copy(cx, h, false);
    }
}

/* Calls fn on every young object of thread t (nurseries are dense). */
static void for_each_young(stm_thread *t, void (*fn)(major_ctx *, stm_header *), major_ctx *cx)
{
    if (!t->nursery_base)
        return;
    char *end = t->in_use ? t->tl->nursery_cur : t->saved_nursery_cur;
    for (char *p = t->nursery_base; p < end;) {
        stm_header *h = (stm_header *)p;
        fn(cx, h);
        p += stm_round_size(gc_object_size(h));
    }
}

static void mark_young(major_ctx *cx, stm_header *h)
{
    trace_copy(cx, h, true);
}

static bool in_transaction(const stm_thread *t)
{
    return t->in_use && t->state != TX_NONE;
}

/* Threads that may hold stm pointers in C locals right now. */
static bool holds_locals(const stm_thread *t)
{
    return t->in_use && (t->gc_state == GC_STOPPED || t->gc_state == GC_BLOCKED);
}

static void mark_vec(major_ctx *cx, const stm_vec *v)
{
    for (size_t i = 0; i < v->count; i++)
        mark_obj(cx, (void *)v->items[i]);
}

static void pin(const void *p)
{
    if (p && !is_young(p))
        ((stm_header *)p)->flags |= F_PINNED;
}

static void mark_pin_visit(void **field, void *ctx)
{
    mark_obj(ctx, *field);
    pin(*field);
}

/* Copies a running transaction read (or is replacing): their fields stay
 * alive even once outdated, since it may still read them before it
 * validates and aborts. */
/* The copy a moved copy stands for: the end of its chain of moves (a
 * young entry stolen by a thief, an old one stolen, ...).  A minor
 * collection replaces such read-set entries by that copy. */
static const stm_header *unmoved(const stm_header *h)
{
    while ((h->flags & (F_MOVED | F_PUBLIC | F_PFP | F_BACKUP)) == F_MOVED &&
           REV_IS_PTR(h->revision))
        h = (const stm_header *)h->revision;
    return h;
}

static void mark_read(major_ctx *cx, const void *p)
{
    if (!p)
        return;
    mark_obj(cx, p);
    /* Compaction does not rewrite an outdated copy's fields, so what they
     * name must stay where it is (pinned) for as long as it is read. */
    const stm_header *h = unmoved(p);
    if (h != p)
        mark_obj(cx, h);
    if (!is_young(h) && is_outdated_public(h))
        gc_trace_fields((void *)h, mark_pin_visit, cx);
}

/* Lists the collector reads but does not rewrite: what they name must
 * stay where it is (compaction may only turn it into a forwarder). */
static void mark_pin_vec(major_ctx *cx, const stm_vec *v)
{
    for (size_t i = 0; i < v->count; i++) {
        mark_obj(cx, (void *)v->items[i]);
        pin((void *)v->items[i]);
    }
}

static void mark_roots(major_ctx *cx, stm_thread *self)
{
    unsigned n = stm_g.threads_allocated;
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        for_each_young(t, mark_young, cx);
        /* The remembered set lists old objects written or allocated
         * (large ones) since the last minor collection.  Only where C
         * locals are live must it keep them (a large object just
         * allocated may sit in one); elsewhere its dead entries are
         * dropped (collect), or a program that allocates only large
         * objects could never free them before its next minor collection
         * (tests/test_major.c, old_blocks_from_pages_pooled_unwalked...). */
        if (!t->in_use || holds_locals(t))
            mark_pin_vec(cx, &t->old_to_trace);
        mark_pin_vec(cx, &t->young_stubs);
        for (size_t k = 0; k < t->stub_memory.count; k++)
            mark_raw((void *)t->stub_memory.items[k]);
        for (size_t k = 1; k < t->young_shadows.count; k += 2)
            mark_raw((void *)t->young_shadows.items[k]);
        if (!t->in_use)
            continue;
        void **bottom = t->ss_bottom, **top = stm_load_relaxed(&t->tl->ss_top);
        if (t->gc_state == GC_PARKED && t != self) {
            /* Outside transactions a thread may push and pop while we
             * scan: only what lay below its parking depth is certain to
             * be a valid root.  Those objects are pinned, not rewritten. */
            if (t->park_top && t->park_top < top)
                top = t->park_top;
            for (void **s = bottom; s < top; s++) {
                void *p = stm_load_relaxed(s);
                mark_obj(cx, p);
                pin(p);
            }
        } else {
            for (void **s = bottom; s < top; s++)
                mark_obj(cx, *s);
        }
        if (in_transaction(t)) {
            for (size_t k = 0; k < t->read_set.count; k++)
                mark_read(cx, (void *)t->read_set.items[k]);
            STM_MAP_FOREACH(&t->p2p, e) {
                mark_read(cx, (void *)e->key);
                mark_obj(cx, (void *)e->value);
            }
            mark_pin_vec(cx, &t->pfp);
            /* Thieves' reports not drained yet: the public copy becomes a
             * write-set key (and may enter the read set) at the drain, so
             * it is one already (found by the random tester, seed 3810). */
            for (size_t k = 0; k + 1 < t->stolen.count; k += 2) {
                mark_read(cx, (void *)t->stolen.items[k]);
                mark_obj(cx, (void *)t->stolen.items[k + 1]);
            }
            /* Old objects the transaction created, and the targets of
             * weak references it followed, may sit in C locals only where
             * locals are still valid; elsewhere they live or die by
             * reachability like everything else. */
            if (holds_locals(t)) {
                mark_vec(cx, &t->tx_old_private);
                mark_vec(cx, &t->tx_weak_gets);
            }
        }
        /* tx_old_private and tx_weak_gets outlive this collection: their
         * survivors are pinned when the lists are pruned (collect). */
    }
    for (size_t i = 0; i < stm_g.global_roots.count; i++) {
        void *p = stm_load_relaxed((void **)stm_g.global_roots.items[i]);
        mark_obj(cx, p);
        pin(p);          /* the slot is the program's: never rewritten */
    }
    for (size_t i = 0; i < stm_g.prebuilts.count; i++)
        mark_obj(cx, (void *)stm_g.prebuilts.items[i]);
}

/* ---- weak references and finalizers ------------------------------------- */

/* The copy a weak reference should keep pointing to, or NULL if the
 * object is dead.  An unmarked outdated copy or stub may lead to a live
 * one. */
static void *weak_survivor(major_ctx *cx, void *p)
{
    for (int hops = 0; p; hops++) {
        if (is_young(p) || gc_owner_of(p) == 0)
            return p;
        stm_header *h = p;
        uint32_t f = h->flags;
        if (f & F_MARK)
            return p;
        intptr_t rev = h->revision;
        if (f & F_STUB) {
            if (REV_IS_STUBPTR(rev)) {
                void *target = (void *)(rev & ~(intptr_t)3);
                if (is_young(target) || (((stm_header *)target)->flags & F_MARK)) {
                    /* Keep the stub: its target lives.  Marked like any
                     * other copy (traced, listed for compaction), not
                     * raw: compaction may relocate its target, and an
                     * unlisted stub would keep naming the copy that
                     * moved away and was freed (found by gcstress under
                     * the debug verifier). */
                    mark_obj(cx, h);
                    drain(cx);
                    return p;
                }
                return NULL;
            }
            p = (void *)rev;
            continue;
        }
        if (((f & F_PUBLIC) || (f & F_MOVED)) && REV_IS_PTR(rev)) {
            p = (void *)rev;
            continue;
        }
        return NULL;
    }
    return NULL;
}

static void process_weakrefs(major_ctx *cx)
{
    for (size_t i = 0; i < cx->weak.count; i++) {
        gc_weakref *w = (gc_weakref *)cx->weak.items[i];
        if (!w->target)
            continue;
        void *s = weak_survivor(cx, w->target);
        if (!s)
            cx->weak_cleared++;
        w->target = s;
    }
}

/* The copy holding the last state of a dead object, starting from its
 * original (which may be a mere forwarder).  Nothing on the way is freed
 * before the sweep. */
static stm_header *last_state(stm_header *h)
{
    for (;;) {
        uint32_t f = h->flags;
        intptr_t rev = h->revision;
        if ((f & F_STUB) && (REV_IS_STUBPTR(rev) || REV_IS_PTR(rev)))
            h = (stm_header *)(rev & ~(intptr_t)3);
        else if (!(f & F_STUB) && (f & (F_PUBLIC | F_MOVED)) && REV_IS_PTR(rev))
            h = (stm_header *)rev;
        else
            return h;
    }
}

static void run_finalizers(major_ctx *cx)
{
    unsigned n = stm_g.threads_allocated;
    in_finalizer = true;
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        size_t kept = 0;
        for (size_t k = 0; k < t->old_finalizable.count; k++) {
            stm_header *h = (stm_header *)t->old_finalizable.items[k];
            if (h->flags & F_MARK) {
                t->old_finalizable.items[kept++] = (uintptr_t)h;
                continue;
            }
            stm_header *last = last_state(h);
            stm_finalizer_fn *fn = gc_finalizer_for(last->tid);
            if (fn)
                fn(last);
            cx->finalized++;
        }
        t->old_finalizable.count = kept;
    }
    in_finalizer = false;
}

/* ---- compaction ------------------------------------------------------------ */

static bool is_outdated_public(const stm_header *h)
{
    return (h->flags & (F_PUBLIC | F_STUB)) == F_PUBLIC && REV_IS_PTR(h->revision);
}

static bool is_plain_forwarder(const stm_header *h)
{
    return (h->flags & (F_MOVED | F_PUBLIC | F_PFP | F_BACKUP | F_SHADOW)) == F_MOVED;
}

/* A stub is needed only while its target is another thread's non-public
 * copy; once a thief published that copy (or the target is public for any
 * other reason), the stub is just one more link. */
static bool stub_passes_through(const stm_header *s)
{
    intptr_t rev = s->revision;
    const stm_header *target = (const stm_header *)(rev & ~(intptr_t)3);
    if (!target || is_young(target))
        return false;
    if (REV_IS_PTR(rev))
        return true;
    return (target->flags & F_PUBLIC) || is_plain_forwarder(target);
}

/* Where references to `p` should point after compaction: the current copy
 * of its object (or the stub that leads to it), moved into the original
 * when it is being relocated. */
static void *fwd(void *p)
{
    if (!p || is_young(p))
        return p;
    void *start = p;
    for (;;) {
        stm_header *h = p;
        uint32_t f = h->flags;
        intptr_t rev = h->revision;
        if (f & F_STUB) {
            if (stub_passes_through(h)) {
                p = (void *)(rev & ~(intptr_t)3);
                continue;
            }
            break;
        }
        if ((is_outdated_public(h) || is_plain_forwarder(h)) && !is_young((void *)rev)) {
            p = (void *)rev;
            continue;
        }
        break;
    }
    /* Path compression: every outdated public copy on the way now names
     * the end directly.  Compaction asks for the forward of every field
     * and of every chain member, so without it a chain of L versions costs
     * L^2 steps: 300 ms to 1.3 s pauses in gcstress, whose 64 slots gather
     * thousands of versions between compactions.  Only outdated public
     * copies are shortened (a moved copy promises its target's content);
     * everyone is stopped, and compaction dooms every transaction that
     * read an outdated copy (step 1), so no validation walks them. */
    for (void *q = start; q != p;) {
        stm_header *h = q;
        intptr_t rev = h->revision;
        void *next = (h->flags & F_STUB) ? (void *)(rev & ~(intptr_t)3) : (void *)rev;
        if (next != p && is_outdated_public(h))
            h->revision = (intptr_t)p;
        q = next;
    }
    stm_header *h = p;
    if (h->flags & F_RELOC)
        return (void *)h->ident;
    return p;
}

static void fwd_visit(void **field, void *ctx)
{
    (void)ctx;
    *field = fwd(*field);
}

static void fwd_young(major_ctx *cx, stm_header *h)
{
    (void)cx;
    if (h->flags & F_WEAKREF)
        return;                        /* in cx->weak: done there */
    if (!(h->flags & F_MOVED))
        gc_trace_fields(h, fwd_visit, NULL);
}

static void fwd_young_revision(major_ctx *cx, stm_header *h)
{
    (void)cx;
    if ((h->flags & F_MOVED) && REV_IS_PTR(h->revision))
        h->revision = (intptr_t)fwd((void *)h->revision);
}

/* Can the current public copy x move into its original? */
static bool can_relocate(const stm_header *x)
{
    if ((x->flags & (F_PUBLIC | F_STUB | F_WEAKREF)) != F_PUBLIC || !REV_IS_STAMP(x->revision))
        return false;
    stm_header *o = (stm_header *)x->ident;
    if (!o || o == x || is_young(o))
        return false;
    if (o->flags & (F_RELOC | F_SHADOW))
        return false;
    return is_outdated_public(o) || is_plain_forwarder(o);
}

/* A transaction that read (or wrote) a copy that is already outdated will
 * fail validation; compaction may reuse that copy's memory or make it
 * current again, so the transaction is aborted when it resumes. */
static bool entry_outdated(const void *p)
{
    /* A moved copy promises the content of its target: it is outdated if
     * that target is (DESIGN.md 13.4; compaction does not keep the
     * promise for such chains, so these readers must go). */
    const stm_header *h = unmoved(p);
    return !is_young(h) && (is_outdated_public(h) || (h->flags & F_STUB));
}

static void doom_outdated(stm_thread *t)
{
    bool doomed = false;
    for (size_t i = 0; i < t->read_set.count; i++)
        if (entry_outdated((void *)t->read_set.items[i]))
            doomed = true;
    STM_MAP_FOREACH(&t->p2p, e) if (entry_outdated((void *)e->key)) doomed = true;
    for (size_t i = 0; i < t->stolen.count; i += 2)
        if (entry_outdated((void *)t->stolen.items[i]))
            doomed = true;
    if (!doomed)
        return;
    t->gc_doomed = STM_ABORT_MAJOR_GC;
    /* Its lists are read once more, by the abort: keep what they name. */
    for (size_t i = 0; i < t->read_set.count; i++)
        pin((void *)t->read_set.items[i]);
    STM_MAP_FOREACH(&t->p2p, e) pin((void *)e->key);
    for (size_t i = 0; i < t->stolen.count; i += 2)
        pin((void *)t->stolen.items[i]);
}

static void rekey_map(stm_map *m, stm_vec *scratch)
{
    if (!m->count)
        return;
    size_t n = 0;
    STM_ASSERT(scratch->capacity >= 2 * m->count);   /* reserved in collect() */
    STM_MAP_FOREACH(m, e) {
        scratch->items[n++] = (uintptr_t)fwd((void *)e->key);
        scratch->items[n++] = e->value;
    }
    memset(m->entries, 0, (m->mask + 1) * sizeof(stm_map_entry));
    m->count = 0;
    for (size_t i = 0; i < n; i += 2)
        stm_map_put(m, scratch->items[i], scratch->items[i + 1]);   /* no growth: same count */
}

static void compact(major_ctx *cx, stm_thread *self)
{
    unsigned n = stm_g.threads_allocated;
    /* 1. Transactions whose reads are outdated are aborted when they
     *    resume (before they could validate against a moved copy). */
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        if (in_transaction(t) && t->state != TX_INEVITABLE)
            doom_outdated(t);
    }
    /* 2. Plan: current public copies move into their originals. */
    for (size_t i = 0; i < cx->marked.count; i++) {
        stm_header *x = (stm_header *)cx->marked.items[i];
        if (can_relocate(x))
            x->flags |= F_RELOC;
    }
    /* 3. Rewrite every reference we own to its forward. */
    for (size_t i = 0; i < cx->marked.count; i++) {
        stm_header *x = (stm_header *)cx->marked.items[i];
        uint32_t f = x->flags;
        /* Outdated copies' fields were not traced (trace_copy) and may
         * name freed blocks; every transaction that could read them is
         * doomed (step 1), and relocation overwrites them. */
        if (!(f & (F_STUB | F_MOVED | F_WEAKREF)) && !is_outdated_public(x))
            gc_trace_client(x, fwd_visit, NULL);
    }
    for (size_t i = 0; i < cx->weak.count; i++) {
        gc_weakref *w = (gc_weakref *)cx->weak.items[i];
        w->target = fwd(w->target);
    }
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        for_each_young(t, fwd_young, cx);
        if (!t->in_use)
            continue;
        if (t->gc_state != GC_PARKED || t == self)
            for (void **s = t->ss_bottom; s < t->tl->ss_top; s++)
                *s = fwd(*s);
        if (in_transaction(t) && t->gc_doomed == STM_ABORT_REASON_COUNT) {
            for (size_t k = 0; k < t->read_set.count; k++)
                t->read_set.items[k] = (uintptr_t)fwd((void *)t->read_set.items[k]);
            rekey_map(&t->p2p, &cx->scratch);
            for (size_t k = 0; k < t->stolen.count; k += 2)
                t->stolen.items[k] = (uintptr_t)fwd((void *)t->stolen.items[k]);
        }
    }
    /* 4. Forwarded-away copies die unless something we may not rewrite
     *    names them; those stay as one-hop forwarders.  Decided before the
     *    moves, which change what the chains look like. */
    for (size_t i = 0; i < cx->marked.count; i++) {
        stm_header *x = (stm_header *)cx->marked.items[i];
        uint32_t f = x->flags;
        bool away = (f & F_RELOC) || ((f & F_STUB) && stub_passes_through(x)) ||
                    is_outdated_public(x) || is_plain_forwarder(x);
        if (!away || (f & F_ORIGINAL))
            continue;
        if (fwd(x) == (void *)x)
            continue;
        if (f & F_PINNED)
            continue;        /* kept; step 6 shortens its revision */
        if (!(f & F_RELOC)) {
            x->flags = f & ~F_MARK;     /* swept */
            cx->compacted++;
        }
    }
    /* 5. Move the contents. */
    for (size_t i = 0; i < cx->marked.count; i++) {
        stm_header *x = (stm_header *)cx->marked.items[i];
        if (!(x->flags & F_RELOC))
            continue;
        stm_header *o = (stm_header *)x->ident;
        size_t size = gc_object_size(x);
        memcpy(o + 1, x + 1, size - sizeof(stm_header));
        o->tid = x->tid;
        o->flags = (x->flags & ~(F_RELOC | F_PINNED | F_ORIGINAL | F_MARK)) |
                   (o->flags & (F_PREBUILT | F_MARK | F_ORIGINAL | F_PINNED));
        o->revision = x->revision;
        o->ident = 0;
        /* Outdated, one hop to o: kept if pinned, freed otherwise, but in
         * both cases what still walks through it this collection (step 6)
         * must arrive at o. */
        x->revision = (intptr_t)o;
        if (x->flags & F_PINNED)
            x->flags &= ~F_RELOC;
        else
            x->flags &= ~(F_RELOC | F_MARK);
        cx->compacted++;
    }
    /* 6. Revisions that still lead somewhere (kept forwarders, backups a
     *    thief published, young copies a thief took) now lead straight to
     *    where the chain ends, never into a copy about to be freed. */
    for (size_t i = 0; i < cx->marked.count; i++) {
        stm_header *x = (stm_header *)cx->marked.items[i];
        if (!(x->flags & F_MARK))
            continue;
        if ((x->flags & F_STUB) && stub_passes_through(x))
            x->revision = (intptr_t)fwd((void *)(x->revision & ~(intptr_t)3));
        else if (!(x->flags & F_STUB) && REV_IS_PTR(x->revision))
            x->revision = (intptr_t)fwd((void *)x->revision);
    }
    /* Finalizable objects are tracked by their original; one whose
     * original was forwarded away is tracked by where it went. */
    for (unsigned i = 1; i <= n; i++) {
        stm_vec *v = &stm_g.threads[i]->old_finalizable;
        for (size_t k = 0; k < v->count; k++) {
            stm_header *e = (stm_header *)v->items[k];
            stm_header *to = fwd(e);
            if (to != e) {
                uintptr_t orig = gc_original_of(to);
                v->items[k] = orig ? orig : (uintptr_t)to;
            }
        }
    }
    for (unsigned i = 1; i <= n; i++)
        for_each_young(stm_g.threads[i], fwd_young_revision, cx);
}

/* ---- verification (STM_DEBUG >= 2) ------------------------------------------- */

#if STM_DEBUG >= 2
static const char *verify_what;
static const void *verify_from;

static void verify_ref(const void *p)
{
    if (!p || is_young(p) || gc_owner_of(p) == 0)
        return;
    const stm_header *h = p;
    if (!(h->flags & F_MARK))
        stm_fatal("major collection: %s %p (flags %#x) names %p (flags %#x, rev %#lx), "
                  "which is about to be freed", verify_what, verify_from,
                  verify_from ? ((const stm_header *)verify_from)->flags : 0, p, h->flags,
                  (unsigned long)h->revision);
}

static void verify_visit(void **field, void *ctx)
{
    (void)ctx;
    verify_ref(*field);
}

static void verify_copy(const stm_header *h)
{
    verify_from = h;
    verify_what = "field of";
    uint32_t f = h->flags;
    if (!(f & (F_STUB | F_MOVED | F_WEAKREF | F_SHADOW)) && !is_outdated_public(h))
        gc_trace_client((void *)h, verify_visit, NULL);
    verify_what = "revision of";
    if (REV_IS_PTR(h->revision) || ((f & F_STUB) && REV_IS_STUBPTR(h->revision)))
        verify_ref((void *)(h->revision & ~(intptr_t)3));
    verify_what = "ident of";
    verify_ref((void *)h->ident);
}

static void verify_young(major_ctx *cx, stm_header *h)
{
    (void)cx;
    verify_copy(h);
}

static void verify_vec(const char *what, const stm_vec *v, size_t step)
{
    verify_what = what;
    verify_from = NULL;
    for (size_t i = 0; i < v->count; i += step)
        verify_ref((void *)v->items[i]);
}

/* Everything the program or the library can still reach must survive the
 * sweep that follows. */
static void verify_before_sweep(major_ctx *cx)
{
    for (size_t i = 0; i < cx->marked.count; i++) {
        const stm_header *x = (const stm_header *)cx->marked.items[i];
        if (x->flags & F_MARK)
            verify_copy(x);
    }
    for (unsigned i = 1; i <= stm_g.threads_allocated; i++)
        gc_verify_oldspace(stm_g.threads[i], verify_copy);
    for (size_t i = 0; i < cx->statics.count; i++)
        verify_copy((const stm_header *)cx->statics.items[i]);
    verify_what = "global root";
    verify_from = NULL;
    for (size_t i = 0; i < stm_g.global_roots.count; i++)
        verify_ref(*(void **)stm_g.global_roots.items[i]);
    unsigned n = stm_g.threads_allocated;
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        for_each_young(t, verify_young, cx);
        verify_vec("old_to_trace entry", &t->old_to_trace, 1);
        verify_vec("young_stubs entry", &t->young_stubs, 1);
        verify_vec("tx_old_private entry", &t->tx_old_private, 1);
        verify_vec("tx_weak_gets entry", &t->tx_weak_gets, 1);
        verify_vec("old_finalizable entry", &t->old_finalizable, 1);
        if (!t->in_use)
            continue;
        if (t->gc_state != GC_PARKED)
            for (void **s = t->ss_bottom; s < t->tl->ss_top; s++) {
                verify_what = "shadow-stack slot";
                verify_ref(*s);
            }
        if (in_transaction(t)) {
            verify_vec("read-set entry", &t->read_set, 1);
            verify_vec("pfp entry", &t->pfp, 1);
            verify_vec("stolen entry", &t->stolen, 1);
            verify_what = "p2p entry";
            STM_MAP_FOREACH(&t->p2p, e) {
                verify_ref((void *)e->key);
                verify_ref((void *)e->value);
            }
        }
    }
}
#endif

/* ---- the collection ------------------------------------------------------------ */

static void clear_statics(major_ctx *cx)
{
    for (size_t i = 0; i < cx->statics.count; i++)
        ((stm_header *)cx->statics.items[i])->flags &= ~F_GC_BITS;
    stm_vec_clear(&cx->statics);
}

/* Keeps the marked objects of v (old ones), pinned.  tx_old_private holds
 * everything a long transaction promoted, mostly dead by now (GCBench: a
 * million objects): an object whose page marked nothing is dropped
 * without reading its header, which is what made this pass costly. */
static void prune_and_pin(stm_vec *v)
{
    size_t kept = 0;
    for (size_t k = 0; k < v->count; k++) {
        stm_header *h = (stm_header *)v->items[k];
        const gc_chunk_slot *sl = gc_chunk_slot_of(h);
        const gc_page *pg = sl ? gc_page_of(sl, h) : NULL;
        if (pg && pg->marked == 0)
            continue;
        if (!(h->flags & F_MARK))
            continue;
        h->flags |= F_PINNED;
        v->items[kept++] = (uintptr_t)h;
    }
    v->count = kept;
}

static bool collect(stm_thread *self, bool thorough)
{
    major_ctx *cx = &cx_static;
    cx->stack.count = cx->marked.count = cx->weak.count = cx->statics.count = 0;
    cx->oom = false;
    memset(&cx->swept, 0, sizeof cx->swept);
    cx->weak_cleared = cx->finalized = cx->compacted = 0;
    cx->candidates = 0;
    unsigned n = stm_g.threads_allocated;
    bool compacting = true;
    for (unsigned i = 1; i <= n; i++)
        if (holds_locals(stm_g.threads[i]) && stm_g.threads[i] != self)
            compacting = false;
    /* Compaction rekeys write sets: room for the largest, or no
     * compaction this time. */
    size_t biggest = 0;
    for (unsigned i = 1; i <= n; i++)
        if (stm_g.threads[i]->p2p.count > biggest)
            biggest = stm_g.threads[i]->p2p.count;
    cx->scratch.count = 0;
    if (compacting && !stm_vec_reserve(&cx->scratch, 2 * biggest))
        compacting = false;
    cx->want_list = compacting;

    mark_roots(cx, self);
    drain(cx);
    if (cx->oom) {
        /* A list could not grow, so the marks are incomplete and nothing
         * may be freed: undo them and give up (the allocation that needed
         * the collection then fails cleanly). */
        for (unsigned i = 1; i <= n; i++)
            gc_unmark_oldspace(stm_g.threads[i]);
        clear_statics(cx);
        stm_vec_free(&cx->stack);
        stm_vec_free(&cx->marked);
        stm_vec_free(&cx->weak);
        return false;
    }
    /* Lists that outlive the collection and that compaction does not
     * rewrite: forget their objects about to be freed, pin the others. */
    for (unsigned i = 1; i <= n; i++) {
        stm_vec *lists[] = { &stm_g.threads[i]->tx_old_private, &stm_g.threads[i]->tx_weak_gets,
                             &stm_g.threads[i]->old_to_trace };
        for (size_t l = 0; l < sizeof lists / sizeof *lists; l++)
            prune_and_pin(lists[l]);
    }
    process_weakrefs(cx);
    run_finalizers(cx);
    /* Compaction costs a pass over every reference in the heap, whatever
     * it finds: a collection triggered by growth skips it until at least
     * one marked copy in GC_COMPACT_RATIO is a stub, forwarder or outdated
     * copy, which bounds what the uncompacted chains hold to that share of
     * the live heap (GCBench: 4 such copies among 200,000 objects). */
    if (compacting && (!cx->want_list || cx->candidates == 0 ||
                       (!thorough && cx->candidates * GC_COMPACT_RATIO < cx->marked.count)))
        compacting = false;
    if (compacting)
        compact(cx, self);
#if STM_DEBUG >= 2
    verify_before_sweep(cx);
#endif
    for (unsigned i = 1; i <= n; i++)
        gc_sweep_oldspace(stm_g.threads[i], &cx->swept);
    clear_statics(cx);

    /* Caches may name copies just freed or moved, and a freed address may
     * be reused: every thread starts over (DESIGN.md 13.5). */
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_g.threads[i];
        t->carry_snapshot = -1;
        if (in_transaction(t))
            stm_cache_clear(t);
    }
    if (cx->stack.capacity > 65536)
        stm_vec_free(&cx->stack);
    if (cx->marked.capacity > 65536)
        stm_vec_free(&cx->marked);

    uint64_t live = cx->swept.bytes_live;
    stm_store_relaxed(&live_after_major, live);
    uint64_t next = live / 100 * (100 + stm_g.cfg.major_growth_percent);
    if (next < stm_g.cfg.major_min_heap)
        next = stm_g.cfg.major_min_heap;
    stm_store_relaxed(&stm_g.major_next, next);

    stm_stat(self, STAT_major_collections, 1);
    if (compacting)
        stm_stat(self, STAT_major_compacting, 1);
    stm_stat(self, STAT_objects_freed, cx->swept.objects_freed);
    stm_stat(self, STAT_bytes_freed, cx->swept.bytes_freed);
    stm_stat(self, STAT_copies_compacted, cx->compacted);
    stm_stat(self, STAT_weakrefs_cleared, cx->weak_cleared);
    stm_stat(self, STAT_finalizers_run, cx->finalized);
    return true;
}

void gc_major_collect(stm_thread *t, int state, bool thorough)
{
    if (in_finalizer)
        return;
    uint64_t t0 = gc_now_ns();
    pthread_mutex_lock(&gc_mutex);
    if (stm_load_relaxed(&gc_requested)) {
        /* Someone else is collecting: that collection serves us too. */
        int prev = t->gc_state;
        stm_store_relaxed(&t->gc_state, state);
        pthread_cond_broadcast(&gc_cond);
        wait_for_collection();
        stm_store_relaxed(&t->gc_state, prev);
        pthread_mutex_unlock(&gc_mutex);
        if (t->state != TX_NONE)
            abort_if_doomed(t);
        return;
    }
    /* Pairs with the seq_cst store/load in gc_park and gc_unpark. */
    stm_store_seq_cst(&gc_requested, 1);
    int prev = t->gc_state;
    stm_store_relaxed(&t->gc_state, state);
    for (;;) {
        bool all = true;
        unsigned n = stm_load_acquire(&stm_g.threads_allocated);
        for (unsigned i = 1; i <= n && all; i++) {
            stm_thread *o = stm_thread_by_index(i);
            /* Pairs with the seq_cst store in gc_unpark. */
            if (stm_load_seq_cst(&o->gc_state) == GC_RUNNING)
                all = false;
        }
        if (all)
            break;
        pthread_cond_wait(&gc_cond, &gc_mutex);
    }
    /* Attach, detach and root registration wait from here on. */
    pthread_mutex_lock(&stm_g.threads_mutex);
    bool done = collect(t, thorough);
    pthread_mutex_unlock(&stm_g.threads_mutex);
    (void)done;   /* a failed collection changed nothing; allocation reports it */
    uint64_t pause = gc_now_ns() - t0;
    gc_histogram_add(&major_pauses, pause);
    /* Seq_cst: pairs with gc_unpark's load: a thread that sees 0 also
     * sees everything the collection wrote (its carry_snapshot ...). */
    stm_store_seq_cst(&gc_requested, 0);
    stm_store_relaxed(&t->gc_state, prev);
    pthread_cond_broadcast(&gc_cond);
    pthread_mutex_unlock(&gc_mutex);
    if (t->state != TX_NONE)
        abort_if_doomed(t);
}

void gc_maybe_major(stm_thread *t)
{
    uint64_t next = stm_load_relaxed(&stm_g.major_next);
    if (gc_old_bytes_in_use() > next)
        gc_major_collect(t, GC_STOPPED_FREE, false);
}

void gc_out_of_memory(size_t bytes)
{
    if (stm_g.cfg.out_of_memory && !in_finalizer)
        stm_g.cfg.out_of_memory(bytes);
}

void gc_fork_child(stm_thread *me)
{
    pthread_mutex_init(&gc_mutex, NULL);
    pthread_cond_init(&gc_cond, NULL);
    stm_store_relaxed(&gc_requested, 0);
    for (unsigned i = 1; i <= stm_g.threads_allocated; i++)
        if (stm_g.threads[i] != me)
            stm_store_relaxed(&stm_g.threads[i]->gc_state, GC_PARKED);
}

STM_API int stm_major_collect(void)
{
    stm_thread *t = stm_me;
    if (!t)
        stm_fatal("stm_major_collect: the calling thread is not attached (call stm_thread_attach)");
    if (in_finalizer)
        return STM_ESTATE;
    if (t->state == TX_NONE) {
        gc_unpark(t);
        gc_major_collect(t, GC_STOPPED_FREE, true);
        gc_park(t, GC_PARKED);
    } else {
        gc_major_collect(t, GC_STOPPED_FREE, true);
    }
    return STM_OK;
}

/* ---- statistics ------------------------------------------------------------------ */

static const char *const gc_stat_names[] = {
#define STM__X(name, text) #name,
    STM_GC_STATS_FIELDS(STM__X)
#undef STM__X
};

STM_API const char *stm_gc_stats_field_name(unsigned i)
{
    return i < sizeof gc_stat_names / sizeof gc_stat_names[0] ? gc_stat_names[i] : NULL;
}

STM_API int stm_get_gc_stats(stm_gc_stats *out)
{
    if (!out || out->size < sizeof(size_t))
        return STM_EINVAL;
    size_t size = out->size < sizeof *out ? out->size : sizeof *out;
    stm_gc_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    static gc_histogram minors;           /* scratch, under the stats mutex */
    static pthread_mutex_t stats_mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&stats_mutex);
    memset(&minors, 0, sizeof minors);
    unsigned n = stm_load_acquire(&stm_g.threads_allocated);
    for (unsigned i = 1; i <= n; i++) {
        stm_thread *t = stm_thread_by_index(i);
        if (!t)
            continue;
        hist_merge(&minors, &t->minor_pauses);
        s.bytes_allocated += stm_load_relaxed(&t->stats[STAT_bytes_allocated]);
        s.bytes_promoted += stm_load_relaxed(&t->stats[STAT_bytes_promoted]);
        s.major_collections += stm_load_relaxed(&t->stats[STAT_major_collections]);
    }
    s.minor_collections = minors.n;
    s.minor_pause_p50_ns = hist_percentile(&minors, 500);
    s.minor_pause_p99_ns = hist_percentile(&minors, 990);
    s.minor_pause_max_ns = minors.max;
    s.minor_pause_total_ns = minors.total;
    gc_histogram majors;
    memset(&majors, 0, sizeof majors);
    hist_merge(&majors, &major_pauses);
    s.major_pause_p50_ns = hist_percentile(&majors, 500);
    s.major_pause_p99_ns = hist_percentile(&majors, 990);
    s.major_pause_max_ns = majors.max;
    s.major_pause_total_ns = majors.total;
    pthread_mutex_unlock(&stats_mutex);
    s.live_after_major = stm_load_relaxed(&live_after_major);
    s.old_bytes_in_use = gc_old_bytes_in_use();
    s.heap_current = stm_load_relaxed(&stm_g.heap_mapped);
    s.heap_peak = stm_load_relaxed(&stm_g.heap_peak);
    memcpy(out, &s, size);
    return STM_OK;
}
