/* core.h -- internal declarations shared by stm/ and gc/.
 *
 * docs/DESIGN.md is the reference for the encodings and protocols; the
 * comments here only say what each piece is for. */
#ifndef STM_CORE_H
#define STM_CORE_H

#define STM_BUILDING_LIBRARY 1
#include "stm.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>

#include "stm/atomics.h"
#include "stm/fail.h"
#include "stm/lists.h"

#ifndef STM_DEBUG
#define STM_DEBUG 0
#endif

#if STM_DEBUG > 0
#define STM_ASSERT(c) \
    ((c) ? (void)0 : stm_fatal("internal assertion failed: %s (%s:%d)", #c, __FILE__, __LINE__))
#else
#define STM_ASSERT(c) ((void)0)
#endif

#define STM_COLD __attribute__((cold, noinline))

/* ---- header flags (stm_header.flags) ---------------------------------- */
/* PUBLIC and PREBUILT are in stm.h (clients need them for STM_PREBUILT). */
#define F_PUBLIC            STM_FLAG_PUBLIC
#define F_STUB              0x0002u  /* public forwarder to another thread's copy */
#define F_PUBLIC_TO_PRIVATE 0x0004u  /* some thread may hold a private copy (hint) */
#define F_PREBUILT          STM_FLAG_PREBUILT
#define F_MOVED             0x0010u  /* revision points to a copy with the same content */
#define F_PFP               0x0020u  /* private-from-protected: ident = backup */
#define F_BACKUP            0x0040u  /* a backup copy (debugging aid) */
#define F_WRITE_BARRIER     STM__FLAG_WRITE_BARRIER   /* old, not in remembered set */
#define F_WEAKREF           0x0200u  /* a weak reference (size and trace are ours) */
#define F_SHADOW            0x0400u  /* reserved old address of a young object (stm_id) */
#define F_FREE              0x0800u  /* a free old-space block (next block in `revision`) */
/* Major-collection bits, set and cleared while the world is stopped. */
#define F_MARK              0x1000u  /* reachable */
#define F_PINNED            0x2000u  /* referenced from memory we may not rewrite */
#define F_ORIGINAL          0x4000u  /* the identity (ident target) of a live copy */
#define F_RELOC             0x8000u  /* current public copy moving into its original */
#define F_GC_BITS (F_MARK | F_PINNED | F_ORIGINAL | F_RELOC)

/* Flags a copy inherits from the object it copies. */
#define F_COPY_MASK F_WEAKREF

/* ---- revision encoding ------------------------------------------------ */
/* odd and < 0          : private revision number (PRN) of a transaction
 * odd, 0 < r < LOCK_BASE: commit stamp of a public copy
 * odd, r >= LOCK_BASE  : locked by the committing thread (LOCK_BASE + 2*index)
 * even, (r & 2) == 0   : pointer to a newer copy (or, with F_MOVED, to a copy
 *                        with the same content)
 * even, (r & 2) == 2   : on stubs only, pointer|2 to the owner's copy      */
#define LOCK_BASE (((intptr_t)1 << 62) | 1)
#define REV_IS_ODD(r)     (((r) & 1) != 0)
#define REV_IS_PRN(r)     ((r) < 0)
#define REV_IS_STAMP(r)   ((r) > 0 && (r) < LOCK_BASE && REV_IS_ODD(r))
#define REV_IS_LOCK(r)    ((r) >= LOCK_BASE)
#define REV_IS_STUBPTR(r) (((r) & 3) == 2)
#define REV_IS_PTR(r)     ((r) != 0 && ((r) & 3) == 0)

/* PRNs carry the thread index in their low bits so that no two threads
 * ever share one: -(((seq << 12) | index) * 2 + 1). */
#define STM_THREAD_BITS 12
#define STM_MAX_THREADS (1u << STM_THREAD_BITS)

/* A stub: a header whose revision is target|2, plus the owner's index. */
typedef struct stm_stub {
    stm_header hdr;
    uintptr_t owner;
    uintptr_t pad_;
} stm_stub;

/* A weak reference (STM_TID_WEAKREF, F_WEAKREF): its target is not traced. */
typedef struct gc_weakref {
    stm_header hdr;
    void *target;
} gc_weakref;

/* How the collector sizes and traces a type without callbacks: `size`
 * bytes, an stm pointer in word i (of sizeof(void *) bytes) for each bit
 * i of `pointers`.  size == 0: no layout. */
typedef struct stm_layout {
    uint32_t size;
    uint32_t pad_;
    uint64_t pointers;
} stm_layout;

/* ---- statistics ------------------------------------------------------- */
enum {
#define STM__X(name, text) STAT_##name,
    STM_STATS_FIELDS(STM__X)
#undef STM__X
    STAT_COUNT
};

/* ---- old-space allocator state (gc/pages.c) --------------------------- */
#define GC_SMALL_CLASSES 64          /* 16..1024 bytes in 16-byte steps */
#define GC_MEDIUM_CLASSES 31         /* 2..32 KiB in 1 KiB steps */
#define GC_CLASSES (GC_SMALL_CLASSES + GC_MEDIUM_CLASSES)
typedef struct gc_class_state {
    char *bump, *end;                /* current page */
    void *free_list;
    size_t nfree;                    /* blocks on free_list */
    size_t nalloc;                   /* blocks handed out and not freed */
} gc_class_state;
/* A page of one size class; `cls` is -1 while the page is in the pool.
 * `marked` counts the blocks a major collection marked in it (zero
 * outside marking): a page with none is pooled without being walked. */
typedef struct gc_page {
    char *start;
    int cls;
    uint32_t marked;
} gc_page;
typedef struct gc_oldspace {
    gc_class_state cls[GC_CLASSES];
    char *chunk_cur, *chunk_end;     /* pages not yet handed to a class */
    size_t bytes_mapped;             /* old chunks and large mappings */
    gc_page *pages;                  /* every page carved so far */
    size_t npages, pages_cap;
    stm_vec free_pages;              /* indexes into pages[] of empty pages */
    stm_vec large;                   /* pairs (address, mapped size) */
    uint64_t bytes_in_use;           /* allocated blocks (relaxed: summed by others) */
} gc_oldspace;

/* ---- pause histogram (gc/major.c) -------------------------------------- */
/* Log-linear: 16 sub-buckets per power of two of nanoseconds. */
#define GC_HIST_SUB 16
#define GC_HIST_BUCKETS (64 * GC_HIST_SUB)
typedef struct gc_histogram {
    uint64_t count[GC_HIST_BUCKETS];
    uint64_t n, total, max;
} gc_histogram;

/* ---- per-thread descriptor -------------------------------------------- */
enum { TX_NONE = 0, TX_REGULAR = 1, TX_INEVITABLE = 2 };

typedef struct stm_thread {
    /* -- shared part: other threads touch it under `lock` -- */
    int lock;                        /* the collection lock (spinlock) */
    unsigned index;                  /* 1..max_threads */
    bool in_use;                     /* attached (under threads_mutex) */
    intptr_t prn;                    /* PRN of the current/next transaction (under lock) */
    intptr_t lock_value;             /* LOCK_BASE + 2*index */
    stm_vec stolen;                  /* pairs (public copy, own PFP object) */
    stm_vec young_stubs;             /* stubs pointing into our nursery */
    char *nursery_base, *nursery_limit;
    char *nursery_zeroed;            /* owner only: [nursery_cur, this) is zero */
    uint64_t stats[STAT_COUNT];      /* owner writes, anyone reads (relaxed) */
    uint64_t aborts_by_reason[STM_ABORT_REASON_COUNT];

    /* -- owner-only part -- */
    stm__tls *tl;
    int state;
    bool explicit_inevitable;        /* begun by stm_begin_inevitable */
    intptr_t snapshot;               /* even: commits stamped below it are visible */
    intptr_t inevitable_time;        /* time value we made odd, while inevitable */
    intptr_t carry_snapshot;         /* cache and read set valid at this time, or -1 */
    stm_vec read_set;                /* public copies and own protected copies read */
    size_t read_set_compact_at;      /* deduplicate when it reaches this size */
    stm_vec cache_fills;             /* keys inserted into the read cache */
    stm_vec cache_aliases;           /* those inserted with value != key */
    uint64_t stolen_from_me;         /* bumped by thieves (under our lock) */
    uint64_t steals_seen;            /* stolen_from_me at the last full scan */
    stm_map p2p;                     /* public copy -> our private copy */
    stm_vec pfp;                     /* our protected objects written in place */
    stm_vec old_to_trace;            /* remembered set: old objects written */
    stm_vec write_locks;             /* during commit: pairs (public, saved revision) */
    stm_vec gc_work;                 /* minor collection's scan queue */
    stm_vec stub_memory;             /* preallocated stubs for the next shared commit */
    stm_vec tx_old_private;          /* old objects created or copied by this transaction */
    stm_vec tx_weak_gets;            /* old targets stm_weakref_get returned in it */
    stm_vec young_shadows;           /* pairs (young object, its reserved old address) */
    stm_vec young_finalizable;       /* young objects of types with finalizers */
    stm_vec old_finalizable;         /* originals of old objects with finalizers */
    stm_vec minor_weakrefs;          /* weak references promoted by this minor collection */
    gc_histogram minor_pauses;       /* written by the owner only */
    /* -- major collection (gc/major.c); gc_state is read by the collector -- */
    int gc_state;                    /* GC_RUNNING, GC_PARKED, ... */
    void **park_top;                 /* shadow-stack depth when it last parked */
    stm_abort_reason gc_doomed;      /* abort at resumption (STM_ABORT_REASON_COUNT: no) */
    char *saved_nursery_cur;         /* while detached */
    gc_oldspace old;
    jmp_buf *jb;                     /* where an abort of the outermost stm_run goes */
    size_t ss_base;                  /* shadow-stack depth at transaction start */
    void **ss_bottom;
    int atomic;
    unsigned attempt;
    uint64_t work_limit;             /* stm_should_break threshold (adaptive) */
    uint64_t tx_alloc_done;          /* bytes allocated in this tx before the last GC */
    char *tx_alloc_mark;             /* nursery position at tx start / last GC */
    char *stats_alloc_mark;          /* nursery bytes below it are counted */
    uint64_t tx_slow_reads;
    uint32_t rng;
    bool have_abort;
    stm_abort_info last_abort;
} stm_thread;

/* ---- global state ----------------------------------------------------- */
typedef struct stm_globals {
    stm_config cfg;
    bool initialised;
    intptr_t time;                   /* the clock: even, odd while inevitable */
    pthread_mutex_t inevitable_mutex;
    pthread_mutex_t threads_mutex;
    stm_thread **threads;            /* [1..max_threads], descriptors are never freed */
    unsigned threads_allocated;      /* highest index ever used */
    stm_vec global_roots;            /* under threads_mutex */
    stm_vec prebuilts;
    stm_vec finalizers;              /* pairs (tid, function), under threads_mutex */
    size_t heap_mapped;              /* atomic: GC memory mapped, all threads */
    size_t heap_peak;                /* atomic */
    uint64_t major_next;             /* old bytes in use that trigger a major collection */
    size_t large_threshold;          /* objects above go straight to old space */
    stm_layout layouts[STM_LAYOUT_MAX_TID + 1];   /* stm_register_layout */
} stm_globals;

extern STM_HIDDEN stm_globals stm_g;
extern STM_HIDDEN __thread stm_thread *stm_me;

/* ---- object layouts (gc/objects.c, stm_register_layout) -------------- */

/* The registered layout of type tid, or NULL: then the callbacks size and
 * trace its objects.  Written once, before the first object of the type
 * is allocated; a collector may read it in another thread at any time. */
static inline const stm_layout *stm_layout_of(uint32_t tid)
{
    if (tid > STM_LAYOUT_MAX_TID)
        return NULL;
    const stm_layout *l = &stm_g.layouts[tid];
    /* Acquire: pairs with the release store of `size` in
     * stm_register_layout, so the pointer mask read next is complete. */
    return stm_load_acquire(&l->size) ? l : NULL;
}

STM_HIDDEN STM_COLD void gc_trace_by_callback(void *obj, stm_visit_fn *visit, void *ctx);
STM_HIDDEN STM_COLD size_t gc_size_by_callback(const void *obj);
#if STM_DEBUG > 0
STM_HIDDEN void gc_check_layout(const void *obj, const stm_layout *l);
#endif

/* The client's fields of a copy of an ordinary object (not a stub, weak
 * reference or reserved address: gc_trace_fields checks).  Inline, so
 * that a collector's visit function is inlined into the layout loop. */
static inline void gc_trace_client(void *obj, stm_visit_fn *visit, void *ctx)
{
    const stm_layout *l = stm_layout_of(((const stm_header *)obj)->tid);
    if (__builtin_expect(l == NULL, 0)) {
        gc_trace_by_callback(obj, visit, ctx);
        return;
    }
#if STM_DEBUG > 0
    gc_check_layout(obj, l);
#endif
    void **words = obj;
    for (uint64_t m = l->pointers; m; m &= m - 1)
        visit(&words[__builtin_ctzll(m)], ctx);
}

/* Visits the strong references of any copy: the client's fields, or for a
 * stub / weak reference / reserved address nothing (their references are
 * the library's). */
static inline void gc_trace_fields(void *obj, stm_visit_fn *visit, void *ctx)
{
    uint32_t f = ((const stm_header *)obj)->flags;
    if (f & (F_STUB | F_WEAKREF | F_SHADOW))
        return;
    gc_trace_client(obj, visit, ctx);
}

/* The size of any copy, as given to stm_allocate (not rounded). */
static inline size_t gc_object_size(const void *obj)
{
    const stm_header *h = obj;
    uint32_t f = stm_load_relaxed(&h->flags);
    if (f & F_STUB)
        return sizeof(stm_stub);
    if (f & F_WEAKREF)
        return sizeof(gc_weakref);
    const stm_layout *l = stm_layout_of(h->tid);
    if (__builtin_expect(l == NULL, 0))
        return gc_size_by_callback(obj);
    return l->size;
}

/* ---- test hooks (STM_TESTING builds only) ---------------------------- */
#ifdef STM_TESTING
#include "tests/support/stm_testing.h"
extern STM_HIDDEN __thread stm_test_hook_fn *stm_test_hooks[STM_POINT_COUNT];
extern STM_HIDDEN __thread void *stm_test_hook_args[STM_POINT_COUNT];
extern STM_HIDDEN __thread long stm_test_abort_budget;
#define STM_TEST_POINT(p) \
    (stm_test_hooks[p] ? stm_test_hooks[p](p, stm_test_hook_args[p]) : (void)0)
#else
#define STM_TEST_POINT(p) ((void)0)
#endif

/* ---- core.c ----------------------------------------------------------- */
STM_HIDDEN STM_COLD __attribute__((noreturn, format(printf, 1, 2)))
void stm_fatal(const char *fmt, ...);
STM_HIDDEN stm_thread *stm_thread_by_index(unsigned index);
STM_HIDDEN void stm_lock(stm_thread *t);
STM_HIDDEN void stm_unlock(stm_thread *t);
STM_HIDDEN bool stm_trylock(stm_thread *t);
/* Rolls back the running transaction and longjmps to stm_run. */
STM_HIDDEN __attribute__((noreturn)) void stm_abort_tx(stm_thread *t, stm_abort_reason why,
                                                     const void *obj);
STM_HIDDEN intptr_t stm_current_stamp(void);

static inline void stm_stat(stm_thread *t, int which, uint64_t n)
{
    stm_counter_add(&t->stats[which], n);
}

/* ---- lifecycle.c ------------------------------------------------------ */
/* Called by stm_thread_attach: arms the thread-exit destructor and the
 * fork handlers (docs/DESIGN.md 11).  STM_OK or STM_ENOMEM. */
STM_HIDDEN int stm_lifecycle_attach(void);

/* ---- barrier.c -------------------------------------------------------- */
/* Resolves any pointer to the copy this transaction must use. */
STM_HIDDEN void *stm_resolve(stm_thread *t, const void *obj);
STM_HIDDEN void stm_cache_insert(stm_thread *t, const void *key, void *value);
STM_HIDDEN stm__cache_entry *stm_cache_find(stm_thread *t, const void *key);
STM_HIDDEN void stm_cache_clear(stm_thread *t);
/* After `pub` got the private copy `priv`: redirect cached resolutions. */
STM_HIDDEN void stm_cache_redirect(stm_thread *t, const void *pub, void *priv);
/* Validation modes: in flight (may wait for committers) or at commit. */
STM_HIDDEN bool stm_validate(stm_thread *t, bool at_commit, const void **bad);
STM_HIDDEN void stm_extend_snapshot(stm_thread *t, const void *why);
STM_HIDDEN bool stm_is_young(const stm_thread *t, const void *p);

/* ---- steal.c ---------------------------------------------------------- */
/* Returns a public copy for `obj`, a non-public object of thread `owner`
 * (or a stub pointing to one), copying it out under the owner's lock. */
STM_HIDDEN void *stm_steal(stm_thread *me, const void *obj_or_stub, unsigned owner);
STM_HIDDEN void *stm_publish_locked(stm_thread *me, stm_thread *owner, void *obj);
STM_HIDDEN stm_stub *stm_make_stub(stm_thread *me, stm_thread *owner, void *target);
/* Initialises stub memory; registers it with `owner` if target is young
 * (owner's lock held). */
STM_HIDDEN bool stm_init_stub(stm_thread *me, stm_stub *s, stm_thread *owner, void *target);
/* Moves the thieves' reports into our public-to-private map (own lock held). */
STM_HIDDEN void stm_drain_stolen(stm_thread *t);

/* ---- gc/ -------------------------------------------------------------- */
STM_HIDDEN bool gc_thread_init(stm_thread *t);
STM_HIDDEN void *gc_old_alloc(stm_thread *t, size_t size);   /* zeroed; NULL on failure */
STM_HIDDEN void gc_old_free(stm_thread *t, void *p, size_t size);
STM_HIDDEN unsigned gc_owner_of(const void *p);                /* 0: not ours (static) */
/* False (and nothing changed) if memory for the collection is missing. */
STM_HIDDEN bool gc_minor_collect(stm_thread *t);
STM_HIDDEN bool gc_is_any_nursery(const void *p);
/* The original (identity-bearing) copy of an old object or a copy of it;
 * 0 for a young original without a reserved address. */
STM_HIDDEN uintptr_t gc_original_of(const stm_header *h);
STM_HIDDEN void gc_histogram_add(gc_histogram *h, uint64_t ns);
STM_HIDDEN uint64_t gc_now_ns(void);
STM_HIDDEN uint64_t gc_old_bytes_in_use(void);
STM_HIDDEN stm_finalizer_fn *gc_finalizer_for(uint32_t tid);

/* ---- gc/major.c: safe points and the stop-the-world rendezvous -------- */
enum {
    GC_RUNNING = 0,      /* may touch the heap */
    GC_PARKED,           /* outside transactions: holds stm pointers only in roots */
    GC_BLOCKED,          /* in a transaction, waiting (inevitable lock): holds locals */
    GC_BLOCKED_FREE,     /* in a commit, waiting: holds no stm pointers outside roots */
    GC_STOPPED,          /* at a safe point that holds locals (barriers, should_break) */
    GC_STOPPED_FREE,     /* at a safe point after which locals are dead (allocation) */
};
extern STM_HIDDEN int gc_requested;
STM_HIDDEN void gc_park(stm_thread *t, int state);
STM_HIDDEN void gc_unpark(stm_thread *t);
STM_HIDDEN void gc_stop_slow(stm_thread *t, int state);
/* A safe point: stops here if a major collection is waiting. */
static inline void gc_safe_point(stm_thread *t, int state)
{
    if (__builtin_expect(stm_load_relaxed(&gc_requested) != 0, 0))
        gc_stop_slow(t, state);
}
/* Aborts the running transaction if the last collection doomed it. */
STM_HIDDEN void gc_check_doomed(stm_thread *t);
/* Runs a major collection from a safe point of kind `state`.  `thorough`
 * (on request, or when memory ran out) compacts whenever there is anything
 * to compact; a collection triggered by heap growth compacts only when
 * enough of the heap would benefit (DESIGN.md 13.6). */
STM_HIDDEN void gc_major_collect(stm_thread *t, int state, bool thorough);
/* After a minor collection: starts a major one if the heap grew enough. */
STM_HIDDEN void gc_maybe_major(stm_thread *t);
/* In a fork child: no collection is pending and only `me` runs. */
STM_HIDDEN void gc_fork_child(stm_thread *me);
/* Called when mapping memory failed or the limit was hit. */
STM_HIDDEN void gc_out_of_memory(size_t bytes);
/* The allocation limit the inline fast path sees in a transaction: the
 * nursery's end, or the bump pointer itself when freed nursery memory is
 * poisoned (ASan builds), so that every allocation unpoisons. */
STM_HIDDEN char *gc_nursery_alloc_end(const stm_thread *t);
/* `rounded` bytes of the nursery if they fit without a collection, else
 * NULL (the write barrier's copies; it never collects). */
STM_HIDDEN void *gc_nursery_take(stm_thread *t, size_t rounded);

/* Adds the nursery bytes allocated since the last call to the stats. */
static inline void stm_account_allocation(stm_thread *t)
{
    stm_stat(t, STAT_bytes_allocated, (uint64_t)(t->tl->nursery_cur - t->stats_alloc_mark));
    t->stats_alloc_mark = t->tl->nursery_cur;
}

static inline size_t stm_round_size(size_t size)
{
    return (size + (STM_ALIGNMENT - 1)) & ~(size_t)(STM_ALIGNMENT - 1);
}

#endif
