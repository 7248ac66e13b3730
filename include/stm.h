/* stm.h -- the public interface of libstm, a C4-style software
 * transactional memory with its own generational garbage collector.
 *
 * Layout of this header: (1) the object header and constants every client
 * needs, (2) configuration and threads, (3) transactions, (4) barriers and
 * allocation, whose fast paths are inline here, (5) roots, (6) statistics
 * and diagnostics.  Everything named stm__* or STM__* is internal: it is
 * visible only because the inline fast paths need it.
 *
 * docs/DESIGN.md explains the protocol behind every entry point.
 */
#ifndef STM_H
#define STM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(STM_BUILDING_LIBRARY)
#  define STM_API __attribute__((visibility("default")))
#else
#  define STM_API
#endif
#define STM__NORETURN   __attribute__((noreturn))
#define STM__LIKELY(x)   __builtin_expect(!!(x), 1)
#define STM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define STM__INLINE     static inline __attribute__((always_inline))

#define STM_VERSION_MAJOR 0
#define STM_VERSION_MINOR 1

/* ------------------------------------------------------------------ */
/* 1. Objects                                                          */
/* ------------------------------------------------------------------ */

/* Every object managed by the library starts with this header; declare it
 * as the first member of your structs:
 *
 *     struct my_int { stm_header hdr; long value; };
 *
 * `tid` is yours (a type id your callbacks understand).  `flags`,
 * `revision` and `ident` belong to the library: never write them.  An
 * object's address is always a multiple of STM_ALIGNMENT. */
typedef struct stm_header {
    uint32_t tid;
    uint32_t flags;
    intptr_t revision;
    uintptr_t ident;
} stm_header;

#define STM_ALIGNMENT 16
/* The largest object stm_allocate accepts, in bytes (1 GiB). */
#define STM_MAX_OBJECT_SIZE ((size_t)1 << 30)
/* Objects larger than this (or than a quarter of the nursery) are
 * allocated directly in the old generation instead of the nursery. */
#define STM_LARGE_OBJECT_SIZE ((size_t)16 << 10)

/* Flags a prebuilt (static) object must carry: see STM_PREBUILT. */
#define STM_FLAG_PUBLIC   0x0001u
#define STM_FLAG_PREBUILT 0x0008u

/* A statically allocated object that is public from the start (readable by
 * every thread through stm_read; written through stm_write like any public
 * object).  Use as the initialiser of the header member, and register the
 * object with stm_register_prebuilt() before any transaction uses it:
 *
 *     static struct my_dict globals __attribute__((aligned(STM_ALIGNMENT)))
 *         = { STM_PREBUILT(T_DICT) };
 */
#define STM_PREBUILT(tid_) \
    { (tid_), STM_FLAG_PUBLIC | STM_FLAG_PREBUILT, 1, 0 }

/* ------------------------------------------------------------------ */
/* 2. Configuration and threads                                        */
/* ------------------------------------------------------------------ */

/* Result codes.  Zero is success; every failure is negative. */
typedef enum stm_status {
    STM_OK = 0,
    STM_EINVAL = -1,     /* bad argument or configuration */
    STM_ESTATE = -2,     /* called in the wrong state (see each entry point) */
    STM_ENOMEM = -3,     /* memory exhausted; the transaction was rolled back */
    STM_ENOTSUP = -4,    /* not supported in this build or on this machine */
} stm_status;

/* The callback through which the collector learns where an object's
 * references are: call `visit(&field, ctx)` once for every field of `obj`
 * that holds a pointer to another stm object (or NULL).  It must not
 * allocate, call barriers or run transactions, and it may be called from
 * any thread, on any copy of the object. */
typedef void stm_visit_fn(void **field, void *ctx);
typedef void stm_trace_fn(void *obj, stm_visit_fn *visit, void *ctx);
/* The size in bytes of `obj`, as passed to stm_allocate. */
typedef size_t stm_size_fn(const void *obj);

/* Library-wide settings, given once to stm_init.  Set `size` to
 * sizeof(stm_config) (stm_config_init does that) so that the library can
 * tell which fields a caller compiled against. */
typedef struct stm_config {
    size_t size;
    stm_size_fn *object_size;      /* required unless every type the program
                                      allocates has a layout (below) */
    stm_trace_fn *trace;           /* the same */
    size_t nursery_size;           /* bytes per thread; default 4 MiB, min 256 B */
    size_t shadow_stack_size;      /* roots per thread; default 1 Mi entries */
    unsigned max_attempts;         /* attempts before a transaction is retried as
                                      inevitable (guaranteed progress); default 16 */
    unsigned max_threads;          /* default and maximum 4095 */
    /* -- the old generation (docs/DESIGN.md, section 13) -- */
    size_t heap_limit;             /* bytes of GC memory (nurseries, old pages,
                                      large objects) the library may map; 0:
                                      no limit (default) */
    unsigned major_growth_percent; /* a major collection runs when the old
                                      generation has grown by this percentage
                                      over what was live after the last one;
                                      default 100 */
    size_t major_min_heap;         /* ... but not before it holds this many
                                      bytes; default 16 MiB */
    void (*out_of_memory)(size_t bytes); /* called (outside any lock) when a
                                      request for `bytes` fails even after a
                                      major collection, just before the
                                      transaction is rolled back; optional */
    int rtm;                       /* lock elision with Intel RTM: STM_RTM_OFF
                                      (default), STM_RTM_AUTO or STM_RTM_ON */
} stm_config;

/* Values of stm_config.rtm.  The library's own short critical sections
 * (its per-thread collection locks, taken by commits, in-place writes and
 * stealing) may run as hardware transactions instead of taking the lock
 * (docs/DESIGN.md 12, "Lock elision").  OFF, the default, never elides:
 * these locks are nearly always uncontended, and where measured a
 * hardware transaction cost more than the lock it replaced
 * (docs/PERFORMANCE.md).  AUTO elides when the CPU offers RTM, is not on
 * the list of models with TSX errata, and a start-up self-test commits a
 * hardware transaction; otherwise it takes the locks as usual, at the
 * cost of one well-predicted branch.  ON is AUTO, except that stm_init
 * fails with STM_ENOTSUP where RTM is not usable.  Elision changes no
 * result, only timing. */
enum { STM_RTM_OFF = 0, STM_RTM_AUTO = 1, STM_RTM_ON = 2 };

/* Object layouts.  Declares that every object of type `tid` is `size`
 * bytes long (header included, the size given to stm_allocate) and holds
 * stm pointers (or NULL) at exactly the `count` byte offsets listed, and
 * nowhere else.  The collector then sizes and traces these objects
 * itself instead of calling the object_size and trace callbacks, which
 * makes minor and major collections faster (docs/PERFORMANCE.md); most
 * interpreters can describe their fixed-size types this way and keep the
 * callbacks for the variable-sized ones.  Call after stm_init, outside
 * transactions, from any thread, before the first object of the type is
 * allocated.  A layout is a promise about every object of the type: a
 * wrong one corrupts the heap as a wrong callback would (debug builds of
 * the library compare it with the callbacks, when there are callbacks,
 * at each use).  Returns STM_OK (also when the same layout is registered
 * again); STM_EINVAL if tid exceeds STM_LAYOUT_MAX_TID, size is below
 * sizeof(stm_header) or above STM_LAYOUT_MAX_SIZE, an offset is not a
 * multiple of sizeof(void *), lies in the header or past the end, or is
 * listed twice, or `offsets` is NULL with count > 0; STM_ESTATE before
 * stm_init, inside a transaction, or if `tid` already has another layout
 * (a type's layout cannot change). */
#define STM_LAYOUT_MAX_TID 4095u
#define STM_LAYOUT_MAX_SIZE (64 * sizeof(void *))
STM_API int stm_register_layout(uint32_t tid, size_t size, const size_t *offsets, size_t count);

/* Fills `cfg` with the defaults.  Callable at any time. */
STM_API void stm_config_init(stm_config *cfg);

/* Initialises the library.  Call once, before any other call except
 * stm_config_init and stm_set_fatal_handler.  Environment variables
 * override some fields: STM_NURSERY_SIZE and STM_HEAP_LIMIT (bytes, k/M/G
 * suffixes), STM_MAJOR_GROWTH (percent), STM_MAJOR_MIN_HEAP (bytes) and
 * STM_RTM (auto, on or off: stm_config.rtm).  Returns STM_OK, STM_EINVAL
 * (one callback without the other, bad size, an rtm value or STM_RTM
 * spelling not listed), STM_ENOTSUP (rtm on, and RTM is not usable here:
 * stm_rtm_enabled says why) or STM_ESTATE (already initialised). */
STM_API int stm_init(const stm_config *cfg);

/* Fills `cfg` with the configuration in effect: what stm_init was given,
 * with defaults for zero fields, the environment overrides applied and
 * nursery_size rounded as the library uses it.  Set cfg->size first
 * (stm_config_init does): a caller compiled against an older, shorter
 * stm_config gets the fields it knows.  Callable at any time after a
 * successful stm_init, from any thread.  Returns STM_OK, STM_EINVAL (NULL,
 * or cfg->size below the fields of the first version) or STM_ESTATE
 * (stm_init has not succeeded). */
STM_API int stm_get_config(stm_config *cfg);

/* Whether stm_init enabled lock elision (1) or not (0).  If `why` is not
 * NULL it receives a short text starting with "on: " or "off: " that names
 * the mechanism or the reason ("off: the CPU does not offer RTM"); after
 * a failed stm_init, the reason of the failure.  Callable at any time. */
STM_API int stm_rtm_enabled(const char **why);

/* Registers the calling thread with the library.  Every thread, the
 * main thread included, must attach before it runs a transaction or
 * touches an stm object.  Returns STM_ESTATE if the thread is already
 * attached or stm_init has not run, STM_ENOMEM if its nursery cannot be
 * allocated, STM_EINVAL if max_threads threads are attached. */
STM_API int stm_thread_attach(void);

/* Unregisters the calling thread.  Call outside any transaction.  The
 * thread's committed objects stay valid and reachable for other threads.
 * Returns STM_ESTATE if the thread is not attached or in a transaction.
 *
 * A thread that exits while attached (returns from its start function or
 * calls pthread_exit) is detached for it; a transaction it is running,
 * inevitable or not, is rolled back first (abort reason THREAD_EXIT), so
 * none of its writes become visible and no lock stays held.  (The main
 * thread's exit() ends the process and runs no such clean-up.)
 *
 * fork(): call it outside transactions.  The library's fork handlers wait
 * until no inevitable transaction runs and no thread is committing,
 * collecting or being stolen from, so the child inherits a consistent
 * committed state.  In the child the forking thread stays attached (if it
 * was) and may go on using the library, and new threads may attach; the
 * other threads do not exist there: their committed objects remain
 * readable, their running transactions are discarded, and their
 * descriptors are retired (they count against max_threads).  fork()
 * inside a transaction calls the fatal handler ("fork() called inside a
 * transaction"). */
STM_API int stm_thread_detach(void);

/* The handler called on fatal misuse (a barrier outside a transaction, a
 * thread that never attached, an API call in the wrong state that cannot
 * return an error, ...).  `msg` names the misuse.  The default prints
 * "libstm fatal error: <msg>" to stderr and calls abort(); if a handler
 * returns, abort() is called anyway.  Callable at any time; returns the
 * previous handler. */
typedef void stm_fatal_fn(const char *msg);
STM_API stm_fatal_fn *stm_set_fatal_handler(stm_fatal_fn *handler);

/* ------------------------------------------------------------------ */
/* 3. Transactions                                                     */
/* ------------------------------------------------------------------ */

/* Values a transaction function returns. */
enum {
    STM_DONE = 0,      /* commit, and stm_run returns */
    STM_CONTINUE = 1,  /* commit, then call the function again in a fresh
                          transaction (chunking long work) */
};
typedef int stm_tx_fn(void *arg);

/* Runs `fn(arg)` in a transaction and commits it; if it conflicts with
 * another thread, its effects are rolled back and it is run again, as
 * often as needed.  After `max_attempts` failed attempts it is run as an
 * inevitable transaction, which cannot fail, so stm_run always
 * terminates.  `fn` may be run several times: it must not have effects
 * outside stm objects, except after stm_become_inevitable().
 *
 * If `fn` returns STM_CONTINUE the transaction commits and `fn` is called
 * again in a new transaction (unless an atomic section is open, in which
 * case the transaction simply goes on).  Keep the state that must survive
 * between calls in stm objects reachable from `arg` or from roots.
 *
 * Called inside a transaction, stm_run runs `fn` as part of the enclosing
 * transaction (flat nesting; STM_CONTINUE then just calls `fn` again).
 *
 * Roots pushed before the transaction began are restored to their values
 * on abort is NOT done: do not change roots below the depth the
 * transaction started at; roots pushed inside it are popped on abort.
 *
 * Returns STM_OK once committed; STM_ENOMEM if memory ran out (the
 * transaction is rolled back and not retried); the thread must be
 * attached (else the fatal handler runs). */
STM_API int stm_run(stm_tx_fn *fn, void *arg);

/* Starts an inevitable transaction without a function: it never aborts,
 * so no retry is needed.  Only one inevitable transaction runs at a time
 * (this call waits for the current one), and while it runs other
 * transactions that wrote shared objects wait before committing.  For
 * set-up code and I/O-heavy sequences.  Returns STM_ESTATE if the thread
 * is already in a transaction. */
STM_API int stm_begin_inevitable(void);

/* Commits the transaction begun by stm_begin_inevitable.  Returns
 * STM_ESTATE if there is none (commit without begin, or inside stm_run). */
STM_API int stm_commit(void);

/* Makes the running transaction inevitable: from here on it cannot abort,
 * so it may do I/O.  It may abort once more while becoming inevitable (if
 * its reads are already outdated).  Fatal outside a transaction. */
STM_API void stm_become_inevitable(void);

/* Aborts the running transaction and runs it again (explicit retry).
 * Fatal outside stm_run or in an inevitable transaction, which cannot
 * abort. */
STM_API STM__NORETURN void stm_abort_and_retry(void);

/* True if the calling thread is inside a transaction. */
STM_API int stm_in_transaction(void);
/* True if the running transaction is inevitable. */
STM_API int stm_is_inevitable(void);

/* A hint for chunking: true when the running transaction has done enough
 * work that the caller should return STM_CONTINUE at the next convenient
 * point.  The threshold adapts: it shrinks after aborts and grows after
 * commits.  Always false inside an atomic section.  Cheap. */
STM_API int stm_should_break(void);

/* Atomic sections: between stm_atomic_begin and stm_atomic_end, the
 * running transaction is never split (STM_CONTINUE does not commit and
 * stm_should_break is false).  They nest; an abort closes them all.  Fatal
 * outside a transaction, or for an unbalanced end. */
STM_API void stm_atomic_begin(void);
STM_API void stm_atomic_end(void);
/* The current nesting depth of atomic sections (0 outside any). */
STM_API int stm_atomic_depth(void);

/* ------------------------------------------------------------------ */
/* 4. Barriers and allocation                                          */
/* ------------------------------------------------------------------ */

/* Internal: per-thread state the inline fast paths read.  The read cache
 * maps any pointer resolved in this transaction (a stub, an outdated
 * copy, a prebuilt object, one's own protected copy ...) to the copy to
 * use.  It is two-way set-associative, indexed by the low 16 address bits
 * (way 0 at `cache`, way 1 STM__CACHE_BYTES further), and lives in static
 * TLS so that a probe is one %fs-relative compare (docs/DESIGN.md, 2.1). */
#define STM__CACHE_BYTES 65536
typedef struct stm__cache_entry { const void *key; void *value; } stm__cache_entry;
typedef struct stm__tls {
    intptr_t prn;          /* private revision number of the transaction; 0 outside */
    char *nursery_cur;     /* bump pointer */
    char *nursery_end;     /* == nursery_cur outside a transaction */
    void **ss_top;         /* shadow stack */
    void **ss_end;
    void **ss_bottom;
    uintptr_t pad_[2];
    stm__cache_entry cache[STM__CACHE_BYTES / sizeof(stm__cache_entry)];
    stm__cache_entry cache_way1[STM__CACHE_BYTES / sizeof(stm__cache_entry)];
} stm__tls;
extern STM_API __thread stm__tls stm__tl __attribute__((tls_model("initial-exec")));

#define STM__FLAG_WRITE_BARRIER 0x0100u

STM_API void *stm__read_slow(const void *obj);
STM_API void *stm__write_slow(void *obj);
STM_API void *stm__allocate_slow(size_t size, uint32_t tid);
STM_API void stm__ss_overflow(void);

/* The one access to a racy header word from inline code: a relaxed atomic
 * load (a plain mov on x86-64 and arm64) so that sanitizers see it as the
 * intended race it is.  It orders nothing; the slow paths do the ordering. */
#define STM__LOAD_RELAXED(lv) __atomic_load_n(&(lv), __ATOMIC_RELAXED)

/* Returns the copy of `obj` to read from.  Call it inside a transaction,
 * on a non-NULL pointer to an stm object, before reading its fields; use
 * the result, not `obj`, for those reads.  The result stays valid until
 * the transaction ends, a collection may run (allocation, stm_run, ...),
 * or stm_write is called on any alias of the same object.  Costs one
 * comparison for objects written by the running transaction and one
 * cache probe for any other pointer already resolved in it (4 and 8
 * instructions on x86-64, see docs/PERFORMANCE.md).  Outside a
 * transaction it calls the fatal handler, except that a pointer resolved
 * in the thread's last transaction may still return that (committed)
 * copy: debug builds (STM_DEBUG > 0) always check. */
STM__INLINE void *stm_read(const void *obj);

/* Returns the copy of `obj` to write to (and to read from afterwards).
 * Same rules as stm_read.  The first write to an object in a transaction
 * calls the out-of-line slow path (it makes a private copy or a backup);
 * later writes through the same pointer, or through any pointer already
 * resolved to that copy, stay inline. */
STM__INLINE void *stm_write(void *obj);

/* Cheaper variant: `obj` is a result of stm_write in this transaction
 * with no allocation or other possible collection since; returns it. */
STM__INLINE void *stm_write_again(void *obj) { return obj; }

/* Allocates a zeroed object of `size` bytes (header included) with type
 * id `tid`, private to the running transaction.  Objects above the
 * nursery's large-object threshold go straight to the old generation.
 * May run a minor collection first: every stm pointer not held in a root
 * is invalid afterwards.  `size` below sizeof(stm_header) is fatal misuse;
 * a size above STM_MAX_OBJECT_SIZE, like memory exhaustion, aborts the
 * transaction and makes stm_run return STM_ENOMEM (inside an inevitable
 * transaction it returns NULL instead).  Fatal outside a transaction. */
STM__INLINE void *stm_allocate(size_t size, uint32_t tid);

/* The type id of an object (any copy). */
STM__INLINE uint32_t stm_get_tid(const void *obj)
{
    return ((const stm_header *)obj)->tid;
}

/* Sanitizers instrument the %fs-relative accesses as if they were plain
 * addresses, so they get the portable version. */
#if defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define STM__SANITIZED 1
#  endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define STM__SANITIZED 1
#endif
#if defined(__x86_64__) && defined(__SEG_FS) && !defined(STM_NO_ASM_BARRIERS) && \
    !defined(STM__SANITIZED)
#  define STM__X86_64_READ 1
#endif

#ifdef STM__X86_64_READ
/* The offset of stm__tl from the thread pointer, loaded from the GOT
 * (initial-exec TLS).  Not volatile: the compiler may hoist it. */
STM__INLINE uintptr_t stm__tls_offset(void)
{
    uintptr_t off;
    __asm__("movq stm__tl@gottpoff(%%rip), %0" : "=r"(off));
    return off;
}
#  define STM__TLS_AT(type, off) (*(type __seg_fs *)(off))
#endif

#ifdef STM_BASELINE
/* The no-STM baseline (docs/PERFORMANCE.md): same allocator and collector,
 * no STM barriers; link with libstm_baseline.  The write barrier keeps only
 * what the generational collector needs (the remembered-set flag test),
 * as any generational GC must. */
STM__INLINE void *stm_read(const void *obj) { return (void *)obj; }
STM__INLINE void *stm_write(void *obj)
{
    if (STM__UNLIKELY(((stm_header *)obj)->flags & STM__FLAG_WRITE_BARRIER))
        return stm__write_slow(obj);
    return obj;
}
#else
STM__INLINE void *stm_read(const void *obj)
{
    const stm_header *h = (const stm_header *)obj;
#if defined(STM_DEBUG) && STM_DEBUG > 0
    if (STM__UNLIKELY(stm__tl.prn == 0))
        return stm__read_slow(obj);
#endif
#ifdef STM__X86_64_READ
    /* gcc does not fold the %fs segment into an indexed address when it
     * accesses a TLS array, which costs two instructions; addressing
     * through __seg_fs with the offset from the GOT gives the minimal
     * sequence with both gcc and clang.  The probe index is the low 16
     * bits of the pointer: objects are 16-byte aligned, entries are 16
     * bytes. */
    uintptr_t tl = stm__tls_offset();
    if (STM__LIKELY(STM__LOAD_RELAXED(h->revision) ==
                    STM__TLS_AT(intptr_t, tl + offsetof(stm__tls, prn))))
        return (void *)obj;
#  if defined(__clang__)
    uintptr_t e = tl + offsetof(stm__tls, cache) + (uint16_t)(uintptr_t)obj;
    if (STM__LIKELY(STM__TLS_AT(const void *, e) == obj))
        return STM__TLS_AT(void *, e + sizeof(void *));
    if (STM__LIKELY(STM__TLS_AT(const void *, e + STM__CACHE_BYTES) == obj))
        return STM__TLS_AT(void *, e + STM__CACHE_BYTES + sizeof(void *));
    return stm__read_slow(obj);
#  else
    /* gcc adds the index into the base register first, one instruction
     * more than needed: the probe is spelled out.  Both asm statements are
     * volatile, so they are neither merged with an earlier probe nor moved
     * across the slow-path calls that fill the cache. */
    {
        uintptr_t i = (uint16_t)(uintptr_t)obj;
        void *res;
        __asm__ goto("cmpq %[p], %%fs:%c[k](%[tl],%[i])\n\t"
                     "jne %l[way1]"
                     : /* no outputs */
                     : [p] "r"(obj), [tl] "r"(tl), [i] "r"(i),
                       [k] "i"(offsetof(stm__tls, cache))
                     : "cc"
                     : way1);
        __asm__ __volatile__("movq %%fs:%c[v](%[tl],%[i]), %[r]"
                             : [r] "=r"(res)
                             : [tl] "r"(tl), [i] "r"(i),
                               [v] "i"(offsetof(stm__tls, cache) + sizeof(void *)));
        return res;
    way1:
        __asm__ goto("cmpq %[p], %%fs:%c[k](%[tl],%[i])\n\t"
                     "jne %l[miss]"
                     : /* no outputs */
                     : [p] "r"(obj), [tl] "r"(tl), [i] "r"(i),
                       [k] "i"(offsetof(stm__tls, cache_way1))
                     : "cc"
                     : miss);
        __asm__ __volatile__("movq %%fs:%c[v](%[tl],%[i]), %[r]"
                             : [r] "=r"(res)
                             : [tl] "r"(tl), [i] "r"(i),
                               [v] "i"(offsetof(stm__tls, cache_way1) + sizeof(void *)));
        return res;
    }
miss:
    return stm__read_slow(obj);
#  endif
#else
    if (STM__LIKELY(STM__LOAD_RELAXED(h->revision) == stm__tl.prn))
        return (void *)obj;
    const stm__cache_entry *e = (const stm__cache_entry *)
        ((const char *)stm__tl.cache + (uint16_t)(uintptr_t)obj);
    if (STM__LIKELY(e->key == obj))
        return e->value;
    e = (const stm__cache_entry *)((const char *)stm__tl.cache_way1 + (uint16_t)(uintptr_t)obj);
    if (STM__LIKELY(e->key == obj))
        return e->value;
    return stm__read_slow(obj);
#endif
}

STM__INLINE void *stm_write(void *obj)
{
    stm_header *h = (stm_header *)obj;
    if (STM__LIKELY(STM__LOAD_RELAXED(h->revision) == stm__tl.prn &&
                    !(h->flags & STM__FLAG_WRITE_BARRIER)
#if defined(STM_DEBUG) && STM_DEBUG > 0
                    && stm__tl.prn != 0
#endif
                    ))
        return obj;
    /* A pointer whose private copy this transaction already made (the
     * public original, a stub ...) resolves through the read cache. */
    {
        const stm__cache_entry *e = (const stm__cache_entry *)
            ((const char *)stm__tl.cache + (uint16_t)(uintptr_t)obj);
        if (e->key == obj) {
            stm_header *v = (stm_header *)e->value;
            if (STM__LOAD_RELAXED(v->revision) == stm__tl.prn &&
                !(v->flags & STM__FLAG_WRITE_BARRIER))
                return v;
        }
    }
    return stm__write_slow(obj);
}
#endif /* STM_BASELINE */

STM__INLINE void *stm_allocate(size_t size, uint32_t tid)
{
    /* One unsigned test sends sizes below the header (they wrap around)
     * and large sizes to the slow path, before the rounding below could
     * overflow; with a constant size it folds away. */
    if (STM__UNLIKELY(size - sizeof(stm_header) > STM_LARGE_OBJECT_SIZE - sizeof(stm_header)))
        return stm__allocate_slow(size, tid);
    size_t rounded = (size + (STM_ALIGNMENT - 1)) & ~(size_t)(STM_ALIGNMENT - 1);
    char *p = stm__tl.nursery_cur;
    if (STM__UNLIKELY((size_t)(stm__tl.nursery_end - p) < rounded))
        return stm__allocate_slow(size, tid);
    stm__tl.nursery_cur = p + rounded;
    stm_header *h = (stm_header *)p;
    h->tid = tid;
    h->revision = stm__tl.prn;
    return p;   /* the nursery is zeroed in advance: flags and ident are 0 */
}

/* ------------------------------------------------------------------ */
/* 5. Roots                                                            */
/* ------------------------------------------------------------------ */

/* The shadow stack: push every stm pointer your C code holds across a
 * call that may collect (allocation, stm_run, stm_become_inevitable,
 * stm_minor_collect), pop it back afterwards; the collector updates the
 * slots when it moves objects, so always re-read the popped value.  May
 * be used inside and outside transactions; outside them another thread's
 * major collection may run at any moment, so a value popped there is
 * dead (use it only to drop it).  Overflow (more than
 * shadow_stack_size entries) is fatal; popping an empty stack is fatal. */
STM__INLINE void stm_push_root(void *obj)
{
    if (STM__UNLIKELY(stm__tl.ss_top == stm__tl.ss_end))
        stm__ss_overflow();
    *stm__tl.ss_top++ = obj;
}
STM_API STM__NORETURN void *stm__ss_underflow(void);
STM__INLINE void *stm_pop_root(void)
{
    if (STM__UNLIKELY(stm__tl.ss_top == stm__tl.ss_bottom))
        return stm__ss_underflow();
    return *--stm__tl.ss_top;
}
/* The current depth of the shadow stack, and the slot `depth` entries
 * from the bottom (for interpreters that keep their frames there). */
STM_API size_t stm_root_depth(void);
STM_API void **stm_root_slot(size_t index);

/* Registers `*slot` (a C global or heap word) as a root shared by all
 * threads.  The slot must hold NULL or a public object (a prebuilt object
 * or the result of stm_publish) and may be changed only outside
 * transactions, under the caller's own synchronisation: to share mutable
 * state, store one public container object and write its fields inside
 * transactions.  Returns STM_ENOMEM or STM_OK. */
STM_API int stm_register_global_root(void **slot);

/* Registers a prebuilt object (see STM_PREBUILT).  Call once per object,
 * outside transactions, before using it.  STM_EINVAL if `obj` lacks the
 * prebuilt flags or is misaligned. */
STM_API int stm_register_prebuilt(void *obj);

/* Returns a public copy of the committed object `obj`, which other
 * threads may reach through non-transactional memory (a global root).
 * Call it outside a transaction, or inside an inevitable one on an object
 * not written by it; returns NULL (and does nothing) on misuse. */
STM_API void *stm_publish(void *obj);

/* Runs a minor collection of the calling thread's nursery now.  Must be
 * inside a transaction (fatal otherwise). */
STM_API void stm_minor_collect(void);

/* Runs a major collection of the whole old generation now, inside or
 * outside a transaction (the thread must be attached).  Other threads
 * stop at their next safe point (an allocation or barrier slow path,
 * stm_should_break, a commit, or between transactions); none has to
 * finish its transaction.  Every stm pointer not held in a root is
 * invalid afterwards, as after an allocation.  Returns STM_OK, or
 * STM_ESTATE if called from an inevitable transaction's
 * stm_become_inevitable wait or a finalizer. */
STM_API int stm_major_collect(void);

/* ------------------------------------------------------------------ */
/* 5b. Identity, weak references, finalizers                           */
/* ------------------------------------------------------------------ */

/* A number identifying the object `obj` (any copy of it, any pointer that
 * reaches it) for as long as it lives: the same whichever thread asks,
 * before and after it is copied, stolen, promoted or compacted.  Inside a
 * transaction only (fatal outside).  Asking for the id of a young object
 * reserves its future old-generation address, which may fail: the
 * transaction is then rolled back with STM_ENOMEM (0 is returned in an
 * inevitable transaction). */
STM_API uintptr_t stm_id(const void *obj);
/* A well-mixed hash of stm_id(obj), for hash tables keyed by identity. */
STM_API uint64_t stm_hash(const void *obj);
/* True if `a` and `b` reach the same object (two copies of one object are
 * equal; NULL equals only NULL).  Never allocates.  Inside a transaction. */
STM_API int stm_id_equal(const void *a, const void *b);

/* Weak references.  stm_weakref_new allocates (like stm_allocate, so it
 * may collect) an immutable object of type STM_TID_WEAKREF that refers to
 * `target` (an stm object or NULL) without keeping it alive;
 * stm_weakref_get returns the target, or NULL once a minor or major
 * collection found it unreachable.  Use the result like any field value:
 * pass it to stm_read.  Both inside a transaction only.  Your size and
 * trace callbacks never see weak references. */
#define STM_TID_WEAKREF 0xFFFFFFFFu
STM_API void *stm_weakref_new(void *target);
STM_API void *stm_weakref_get(const void *weakref);

/* Light finalizers: `fn(obj)` is called once when an object of type `tid`
 * allocated with stm_allocate_finalizable dies, to release external
 * resources it names (a file descriptor, a malloc'd buffer).  It runs
 * inside the collection that found the object dead, on a copy holding
 * the object's last state, with other threads stopped: it must not call
 * any stm function, block, or keep `obj`.  Register types outside
 * transactions, before allocating; STM_EINVAL for a NULL fn or the
 * weak-reference tid, STM_ENOMEM if the table cannot grow.  Registering a
 * tid again replaces its function. */
typedef void stm_finalizer_fn(void *obj);
STM_API int stm_register_finalizer(uint32_t tid, stm_finalizer_fn *fn);
/* stm_allocate for objects of a type with a registered finalizer (fatal
 * if there is none); out of line, otherwise the same contract. */
STM_API void *stm_allocate_finalizable(size_t size, uint32_t tid);

/* ------------------------------------------------------------------ */
/* 6. Statistics and diagnostics                                       */
/* ------------------------------------------------------------------ */

/* Why a transaction attempt was rolled back. */
#define STM_ABORT_REASONS(X)                                                  \
    X(EXPLICIT, "stm_abort_and_retry was called")                            \
    X(WRITE_CONFLICT, "an object written was committed by another thread")  \
    X(VALIDATE_INFLIGHT, "a read became outdated while the transaction ran") \
    X(VALIDATE_COMMIT, "a read became outdated before the commit")           \
    X(VALIDATE_INEVITABLE, "a read was outdated when becoming inevitable")   \
    X(STOLEN_MODIFIED, "an object it modified was stolen and then changed")  \
    X(OUT_OF_MEMORY, "memory was exhausted")                                  \
    X(MAJOR_GC, "a major collection found a read already outdated")          \
    X(TEST_HOOK, "a test hook requested the abort")                           \
    X(THREAD_EXIT, "the thread exited inside the transaction")

typedef enum stm_abort_reason {
#define STM__X(name, text) STM_ABORT_##name,
    STM_ABORT_REASONS(STM__X)
#undef STM__X
    STM_ABORT_REASON_COUNT
} stm_abort_reason;

/* Human-readable name of a reason ("WRITE_CONFLICT") and description. */
STM_API const char *stm_abort_reason_name(stm_abort_reason r);
STM_API const char *stm_abort_reason_text(stm_abort_reason r);

/* The last abort of the calling thread: its reason, the object involved
 * (an address, possibly outdated: use only for identification) and its
 * type id, and how many attempts the transaction had made.  Returns 0 if
 * the thread never aborted, 1 otherwise. */
typedef struct stm_abort_info {
    stm_abort_reason reason;
    const void *object;
    uint32_t object_tid;
    unsigned attempt;
} stm_abort_info;
STM_API int stm_last_abort(stm_abort_info *out);

/* Counters, merged over all threads (attached and detached) on request. */
#define STM_STATS_FIELDS(X)                                                   \
    X(commits, "transactions committed")                                      \
    X(commits_readonly, "commits that wrote nothing")                         \
    X(commits_private, "commits that wrote only thread-owned objects")       \
    X(commits_shared, "commits that published writes to shared objects")     \
    X(aborts, "attempts rolled back (all reasons)")                           \
    X(inevitable, "transactions that became inevitable")                     \
    X(read_slow, "read barriers that took the slow path")                    \
    X(write_slow, "write barriers that took the slow path")                  \
    X(read_validations, "read-set validations run")                          \
    X(steals, "objects stolen from other threads")                           \
    X(stubs_created, "stubs created")                                        \
    X(minor_collections, "minor collections")                                \
    X(bytes_allocated, "bytes allocated")                                    \
    X(bytes_promoted, "bytes copied out of nurseries")                       \
    X(backups_made, "backup copies made for in-place writes")                \
    X(major_collections, "major collections")                                \
    X(major_compacting, "major collections that also compacted version chains") \
    X(objects_freed, "old objects freed by major collections")               \
    X(bytes_freed, "old-generation bytes freed by major collections")        \
    X(copies_compacted, "outdated copies and stubs removed by compaction")   \
    X(weakrefs_cleared, "weak references cleared")                           \
    X(finalizers_run, "finalizers called")                                    \
    X(rtm_elided, "lock critical sections run as hardware transactions")    \
    X(rtm_fallbacks, "elision attempts that gave up and took the lock")     \
    X(rtm_abort_busy, "elision aborts: the lock was held")                  \
    X(rtm_abort_conflict, "elision aborts: memory conflict (transient)")    \
    X(rtm_abort_retry, "elision aborts: retry hinted (transient)")          \
    X(rtm_abort_capacity, "elision aborts: too much memory touched")        \
    X(rtm_abort_debug, "elision aborts: debug breakpoint")                  \
    X(rtm_abort_nested, "elision aborts: inside a nested transaction")      \
    X(rtm_abort_explicit, "elision aborts: other explicit abort (fatal)")   \
    X(rtm_abort_unknown, "elision aborts: no cause given (interrupt, "      \
                         "system call, page fault, TSX disabled)")

#define STM_STATS_VERSION 2
typedef struct stm_stats {
    size_t size;          /* set by the caller: sizeof(stm_stats) */
    unsigned version;     /* set by the library: STM_STATS_VERSION */
#define STM__X(name, text) uint64_t name;
    STM_STATS_FIELDS(STM__X)
#undef STM__X
    uint64_t aborts_by_reason[STM_ABORT_REASON_COUNT];
} stm_stats;

/* Fills `out` with the counters summed over all threads, up to
 * out->size bytes (so older callers keep working).  Callable at any time
 * from any attached or unattached thread; counters of threads running
 * concurrently are read without stopping them (each is exact by itself).
 * Returns STM_EINVAL if out->size is too small for the version field. */
STM_API int stm_get_stats(stm_stats *out);
/* Name and description of the i-th counter field, for printing; NULL
 * past the end. */
STM_API const char *stm_stats_field_name(unsigned i);

/* The collector's figures: pause times (nanoseconds, percentiles from a
 * log-linear histogram, within 3%), heap sizes in bytes.  `heap_*` count
 * every byte of GC memory mapped (nurseries, old pages, large objects);
 * `old_bytes_in_use` the old generation's allocated blocks now;
 * `live_after_major` what the last major collection kept. */
#define STM_GC_STATS_FIELDS(X)                                               \
    X(minor_collections, "minor collections")                                \
    X(major_collections, "major collections")                                \
    X(minor_pause_p50_ns, "minor pause, median (ns)")                        \
    X(minor_pause_p99_ns, "minor pause, 99th percentile (ns)")               \
    X(minor_pause_max_ns, "minor pause, maximum (ns)")                       \
    X(major_pause_p50_ns, "major pause, median (ns)")                        \
    X(major_pause_p99_ns, "major pause, 99th percentile (ns)")               \
    X(major_pause_max_ns, "major pause, maximum (ns)")                       \
    X(major_pause_total_ns, "major pauses, sum (ns)")                        \
    X(minor_pause_total_ns, "minor pauses, sum (ns)")                        \
    X(bytes_allocated, "bytes allocated")                                    \
    X(bytes_promoted, "bytes copied out of nurseries")                       \
    X(live_after_major, "old-generation bytes live after the last major collection") \
    X(old_bytes_in_use, "old-generation bytes in allocated blocks")          \
    X(heap_current, "GC memory mapped now")                                  \
    X(heap_peak, "GC memory mapped at most")

typedef struct stm_gc_stats {
    size_t size;          /* set by the caller: sizeof(stm_gc_stats) */
#define STM__X(name, text) uint64_t name;
    STM_GC_STATS_FIELDS(STM__X)
#undef STM__X
} stm_gc_stats;

/* Fills `out` (up to out->size bytes).  Callable at any time from any
 * thread; STM_EINVAL if out->size is too small. */
STM_API int stm_get_gc_stats(stm_gc_stats *out);
STM_API const char *stm_gc_stats_field_name(unsigned i);

#ifdef __cplusplus
}
#endif
#endif /* STM_H */
