/* core.c -- library and thread set-up, the fatal handler, statistics, and
 * the transaction life cycle: begin, commit, abort, inevitability, atomic
 * sections and the retry loop of stm_run.  The commit protocol is
 * described in docs/DESIGN.md, "Commit"; the invariants it relies on are
 * referred to there by name. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>

#include "stm/core.h"
#include "stm/elide.h"
#include "gc/pages.h"

stm_globals stm_g = {
    .inevitable_mutex = PTHREAD_MUTEX_INITIALIZER,
    .threads_mutex = PTHREAD_MUTEX_INITIALIZER,
};
__thread stm_thread *stm_me;
STM_API __thread stm__tls stm__tl __attribute__((tls_model("initial-exec")));

/* ---------------------------------------------------------------------- */
/* Fatal errors                                                            */
/* ---------------------------------------------------------------------- */

static void default_fatal(const char *msg)
{
    fprintf(stderr, "libstm fatal error: %s\n", msg);
}
static stm_fatal_fn *fatal_handler = default_fatal;

STM_API stm_fatal_fn *stm_set_fatal_handler(stm_fatal_fn *handler)
{
    return __atomic_exchange_n(&fatal_handler, handler ? handler : default_fatal,
                               __ATOMIC_ACQ_REL);
}

void stm_fatal(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    stm_fatal_fn *h = __atomic_load_n(&fatal_handler, __ATOMIC_ACQUIRE);
    stm_elide_on_fatal();   /* report from outside any hardware transaction */
    h(msg);
    abort();
}

/* ---------------------------------------------------------------------- */
/* Collection locks                                                        */
/* ---------------------------------------------------------------------- */

bool stm_trylock(stm_thread *t)
{
    int expected = 0;
    /* Acquire: pairs with the release in stm_unlock, so that everything
     * the previous holder wrote under the lock is visible. */
    return stm_cas_acquire(&t->lock, &expected, 1);
}

void stm_lock(stm_thread *t)
{
    unsigned spins = 0;
    while (!stm_trylock(t)) {
        while (stm_load_relaxed(&t->lock)) {
            if (++spins < 256)
                stm_cpu_relax();
            else
                sched_yield();   /* more threads than cores: let the holder run */
        }
    }
}

void stm_unlock(stm_thread *t)
{
    /* Pairs with the acquire CAS in stm_trylock. */
    stm_store_release(&t->lock, 0);
}

/* ---------------------------------------------------------------------- */
/* Initialisation and threads                                              */
/* ---------------------------------------------------------------------- */

STM_API void stm_config_init(stm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->nursery_size = (size_t)4 << 20;
    cfg->shadow_stack_size = (size_t)1 << 20;
    cfg->max_attempts = 16;
    cfg->max_threads = STM_MAX_THREADS - 1;
    cfg->heap_limit = 0;
    cfg->major_growth_percent = 100;
    cfg->major_min_heap = (size_t)16 << 20;
}

STM_API int stm_get_config(stm_config *cfg)
{
    if (!cfg || cfg->size < offsetof(stm_config, nursery_size))
        return STM_EINVAL;
    if (!stm_g.initialised)
        return STM_ESTATE;
    size_t n = cfg->size < sizeof stm_g.cfg ? cfg->size : sizeof stm_g.cfg;
    memcpy(cfg, &stm_g.cfg, n);
    cfg->size = n;
    return STM_OK;
}

static size_t parse_size_env(const char *name, size_t dflt)
{
    const char *s = secure_getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1024 * 1024 * 1024, end++;
    if (errno || *end || v == 0 || v > SIZE_MAX / mul)
        return dflt;   /* tolerant: a bad value keeps the default */
    return (size_t)(v * mul);
}

STM_API int stm_init(const stm_config *user)
{
    if (stm_g.initialised)
        return STM_ESTATE;
    /* Both callbacks or neither (every type then has a layout). */
    if (!user || user->size < offsetof(stm_config, nursery_size) ||
        !user->object_size != !user->trace)
        return STM_EINVAL;
    stm_config cfg;
    stm_config_init(&cfg);
    memcpy(&cfg, user, user->size < sizeof cfg ? user->size : sizeof cfg);
    cfg.size = sizeof cfg;
    stm_config dflt;
    stm_config_init(&dflt);
    if (!cfg.nursery_size)
        cfg.nursery_size = dflt.nursery_size;
    if (!cfg.shadow_stack_size)
        cfg.shadow_stack_size = dflt.shadow_stack_size;
    if (!cfg.max_attempts)
        cfg.max_attempts = dflt.max_attempts;
    if (!cfg.max_threads)
        cfg.max_threads = dflt.max_threads;
    /* Fields a caller compiled before they existed keep their defaults
     * (the memcpy above stopped at user->size). */
    if (user->size < offsetof(stm_config, major_growth_percent) + sizeof(unsigned) ||
        !cfg.major_growth_percent)
        cfg.major_growth_percent = dflt.major_growth_percent;
    if (user->size < offsetof(stm_config, major_min_heap) + sizeof(size_t) || !cfg.major_min_heap)
        cfg.major_min_heap = dflt.major_min_heap;
    cfg.nursery_size = parse_size_env("STM_NURSERY_SIZE", cfg.nursery_size);
    cfg.heap_limit = parse_size_env("STM_HEAP_LIMIT", cfg.heap_limit);
    cfg.major_min_heap = parse_size_env("STM_MAJOR_MIN_HEAP", cfg.major_min_heap);
    cfg.major_growth_percent =
        (unsigned)parse_size_env("STM_MAJOR_GROWTH", cfg.major_growth_percent);
    if (cfg.major_growth_percent > 100000)
        return STM_EINVAL;
    if (cfg.nursery_size < 256 || cfg.nursery_size > ((size_t)1 << 34) ||
        cfg.max_threads >= STM_MAX_THREADS || cfg.shadow_stack_size > ((size_t)1 << 32))
        return STM_EINVAL;
    int rtm = stm_rtm_init(cfg.rtm);   /* lock elision: STM_RTM, detection */
    if (rtm != STM_OK)
        return rtm;
    cfg.nursery_size = stm_round_size(cfg.nursery_size);
    stm_g.threads = stm_sys_calloc(cfg.max_threads + 1, sizeof(stm_thread *));
    if (!stm_g.threads)
        return STM_ENOMEM;
    stm_g.cfg = cfg;
    /* Objects above a quarter of the nursery (or STM_LARGE_OBJECT_SIZE)
     * skip it, so that one allocation never needs more than one minor
     * collection.  The inline fast path checks only the constant; the slow
     * path applies both. */
    stm_g.large_threshold = cfg.nursery_size / 4 < STM_LARGE_OBJECT_SIZE ? cfg.nursery_size / 4
                                                                         : STM_LARGE_OBJECT_SIZE;
    stm_g.time = 2;
    stm_g.major_next = cfg.major_min_heap;
    stm_g.initialised = true;
    return STM_OK;
}

stm_thread *stm_thread_by_index(unsigned index)
{
    /* Descriptors are published with a release store in attach and never
     * freed; pairs with that store. */
    return stm_load_acquire(&stm_g.threads[index]);
}

/* Outside a transaction no object matches the PRN and allocation always
 * reaches the slow path, which reports the misuse. */
static void tls_outside_tx(void)
{
    stm__tl.prn = 0;
    stm__tl.nursery_end = stm__tl.nursery_cur;
}

STM_API int stm_thread_attach(void)
{
    if (!stm_g.initialised || stm_me)
        return STM_ESTATE;
    if (stm_lifecycle_attach() != STM_OK)
        return STM_ENOMEM;
    pthread_mutex_lock(&stm_g.threads_mutex);
    stm_thread *t = NULL;
    unsigned idx;
    for (idx = 1; idx <= stm_g.threads_allocated; idx++)
        if (!stm_g.threads[idx]->in_use) {
            t = stm_g.threads[idx];
            break;
        }
    bool fresh = false;
    if (!t) {
        if (stm_g.threads_allocated >= stm_g.cfg.max_threads) {
            pthread_mutex_unlock(&stm_g.threads_mutex);
            return STM_EINVAL;
        }
        t = stm_sys_calloc(1, sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&stm_g.threads_mutex);
            return STM_ENOMEM;
        }
        idx = stm_g.threads_allocated + 1;
        t->index = idx;
        /* Not running: a collection need not wait for a thread that has
         * not started a transaction. */
        t->gc_state = GC_PARKED;
        t->gc_doomed = STM_ABORT_REASON_COUNT;
        t->lock_value = LOCK_BASE + 2 * (intptr_t)idx;
        t->prn = -(((intptr_t)1 << STM_THREAD_BITS | idx) * 2 + 1);
        fresh = true;
    }
    void **ss = stm_sys_alloc(stm_g.cfg.shadow_stack_size * sizeof(void *));
    t->tl = &stm__tl;
    if (!ss || !gc_thread_init(t)) {
        free(ss);
        if (fresh)
            free(t);
        pthread_mutex_unlock(&stm_g.threads_mutex);
        return STM_ENOMEM;
    }
    if (!fresh)
        stm__tl.nursery_cur = t->saved_nursery_cur;   /* its young objects live on */
    t->in_use = true;
    if (fresh) {
        /* Pairs with the acquire load in stm_thread_by_index. */
        stm_store_release(&stm_g.threads[idx], t);
        /* Pairs with the acquire loads of the count by lock-free readers
         * (gc_old_bytes_in_use): the descriptor is published first. */
        stm_store_release(&stm_g.threads_allocated, idx);
    }
    pthread_mutex_unlock(&stm_g.threads_mutex);

    t->ss_bottom = ss;
    stm__tl.ss_bottom = ss;
    stm__tl.ss_top = ss;
    stm__tl.ss_end = ss + stm_g.cfg.shadow_stack_size;
    stm_store_relaxed(&t->state, TX_NONE);
    t->carry_snapshot = -1;
    t->work_limit = (uint64_t)stm_g.cfg.nursery_size * 4;
    t->rng = 0x9e3779b9u * idx;
    t->stats_alloc_mark = stm__tl.nursery_cur;
    tls_outside_tx();
    stm_me = t;
    return STM_OK;
}

STM_API int stm_thread_detach(void)
{
    stm_thread *t = stm_me;
    if (!t || t->state != TX_NONE)
        return STM_ESTATE;
    /* Empty the nursery, so that its memory can go back to the system
     * while the descriptor waits to be reused.  What the shadow stack
     * still holds is kept (it may name published objects). */
    gc_unpark(t);
    bool emptied = gc_minor_collect(t);
    gc_park(t, GC_PARKED);
    stm_account_allocation(t);
    stm_cache_clear(t);
    stm_vec_clear(&t->read_set);
    t->saved_nursery_cur = stm__tl.nursery_cur;
    if (emptied)
        stm_sys_discard(t->nursery_base, (size_t)(t->nursery_limit - t->nursery_base));
    void **ss = t->ss_bottom;
    stm__tl.ss_top = stm__tl.ss_end = stm__tl.ss_bottom = NULL;
    stm__tl.nursery_cur = stm__tl.nursery_end = NULL;
    stm_me = NULL;
    /* Under the mutex: a major collection scans attached threads' stacks
     * while holding it, so the stack is freed only once we are out. */
    pthread_mutex_lock(&stm_g.threads_mutex);
    t->tl = NULL;
    t->in_use = false;
    t->ss_bottom = NULL;
    pthread_mutex_unlock(&stm_g.threads_mutex);
    free(ss);
    return STM_OK;
}

static stm_thread *attached_or_die(const char *what)
{
    stm_thread *t = stm_me;
    if (!t)
        stm_fatal("%s: the calling thread is not attached (call stm_thread_attach)", what);
    return t;
}

/* ---------------------------------------------------------------------- */
/* Shadow stack and roots                                                  */
/* ---------------------------------------------------------------------- */

STM_API void stm__ss_overflow(void)
{
    if (!stm_me)
        stm_fatal("stm_push_root: the calling thread is not attached (call stm_thread_attach)");
    stm_fatal("stm_push_root: shadow stack overflow (%zu entries; raise "
              "stm_config.shadow_stack_size)", stm_g.cfg.shadow_stack_size);
}

STM_API void *stm__ss_underflow(void)
{
    if (!stm_me)
        stm_fatal("stm_pop_root: the calling thread is not attached (call stm_thread_attach)");
    stm_fatal("stm_pop_root: the shadow stack is empty");
}

STM_API size_t stm_root_depth(void)
{
    stm_thread *t = attached_or_die("stm_root_depth");
    return (size_t)(stm__tl.ss_top - t->ss_bottom);
}

STM_API void **stm_root_slot(size_t index)
{
    stm_thread *t = attached_or_die("stm_root_slot");
    if (index >= (size_t)(stm__tl.ss_top - t->ss_bottom))
        stm_fatal("stm_root_slot: index %zu beyond the shadow stack depth %zu", index,
                  (size_t)(stm__tl.ss_top - t->ss_bottom));
    return &t->ss_bottom[index];
}

STM_API int stm_register_global_root(void **slot)
{
    if (!slot)
        return STM_EINVAL;
    pthread_mutex_lock(&stm_g.threads_mutex);
    bool ok = stm_vec_push(&stm_g.global_roots, (uintptr_t)slot);
    pthread_mutex_unlock(&stm_g.threads_mutex);
    return ok ? STM_OK : STM_ENOMEM;
}

STM_API int stm_register_prebuilt(void *obj)
{
    stm_header *h = obj;
    if (!h || ((uintptr_t)h & (STM_ALIGNMENT - 1)) ||
        (h->flags & (F_PUBLIC | F_PREBUILT)) != (F_PUBLIC | F_PREBUILT) || h->revision != 1)
        return STM_EINVAL;
    pthread_mutex_lock(&stm_g.threads_mutex);
    bool ok = stm_vec_push(&stm_g.prebuilts, (uintptr_t)obj);
    pthread_mutex_unlock(&stm_g.threads_mutex);
    return ok ? STM_OK : STM_ENOMEM;
}

/* ---------------------------------------------------------------------- */
/* Statistics                                                              */
/* ---------------------------------------------------------------------- */

static const char *const reason_names[] = {
#define STM__X(name, text) #name,
    STM_ABORT_REASONS(STM__X)
#undef STM__X
};
static const char *const reason_texts[] = {
#define STM__X(name, text) text,
    STM_ABORT_REASONS(STM__X)
#undef STM__X
};
static const char *const stat_names[] = {
#define STM__X(name, text) #name,
    STM_STATS_FIELDS(STM__X)
#undef STM__X
};

STM_API const char *stm_abort_reason_name(stm_abort_reason r)
{
    return (unsigned)r < STM_ABORT_REASON_COUNT ? reason_names[r] : "UNKNOWN";
}
STM_API const char *stm_abort_reason_text(stm_abort_reason r)
{
    return (unsigned)r < STM_ABORT_REASON_COUNT ? reason_texts[r] : "unknown reason";
}
STM_API const char *stm_stats_field_name(unsigned i)
{
    return i < STAT_COUNT ? stat_names[i] : NULL;
}

STM_API int stm_get_stats(stm_stats *out)
{
    if (!out || out->size < offsetof(stm_stats, version) + sizeof(unsigned))
        return STM_EINVAL;
    stm_stats all;
    memset(&all, 0, sizeof all);
    all.size = sizeof all;
    all.version = STM_STATS_VERSION;
    uint64_t *fields = &all.commits;
    if (stm_me)
        stm_account_allocation(stm_me);
    pthread_mutex_lock(&stm_g.threads_mutex);
    for (unsigned i = 1; i <= stm_g.threads_allocated; i++) {
        stm_thread *t = stm_g.threads[i];
        for (unsigned f = 0; f < STAT_COUNT; f++)
            fields[f] += stm_load_relaxed(&t->stats[f]);
        for (unsigned r = 0; r < STM_ABORT_REASON_COUNT; r++)
            all.aborts_by_reason[r] += stm_load_relaxed(&t->aborts_by_reason[r]);
    }
    pthread_mutex_unlock(&stm_g.threads_mutex);
    size_t n = out->size < sizeof all ? out->size : sizeof all;
    memcpy((char *)out + sizeof out->size, (char *)&all + sizeof all.size, n - sizeof out->size);
    return STM_OK;
}

STM_API int stm_last_abort(stm_abort_info *out)
{
    stm_thread *t = stm_me;
    if (!t || !t->have_abort)
        return 0;
    *out = t->last_abort;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* The clock                                                               */
/* ---------------------------------------------------------------------- */

/* The stamp that a copy made now may carry: below every snapshot taken
 * from now on, above every commit finished so far. */
intptr_t stm_current_stamp(void)
{
    /* Acquire: pairs with the release CAS/stores of committers, so that
     * what they published before moving the clock is visible. */
    return (stm_load_acquire(&stm_g.time) & ~(intptr_t)1) - 1;
}

/* ---------------------------------------------------------------------- */
/* Transactions                                                            */
/* ---------------------------------------------------------------------- */

/* The transaction's size, for stm_should_break and its adaptive limit:
 * bytes allocated plus a weight per slow-path read. */
static uint64_t tx_work(const stm_thread *t)
{
    return t->tx_alloc_done + (uint64_t)(stm__tl.nursery_cur - t->tx_alloc_mark) +
           64 * t->tx_slow_reads;
}

static void next_prn(stm_thread *t)
{
    /* Relaxed: thieves read it (under our lock, or not) only to diagnose
     * an uncommitted object that escaped through raw memory. */
    stm_store_relaxed(&t->prn, t->prn - ((intptr_t)2 << STM_THREAD_BITS));
}

static void begin_tx(stm_thread *t)
{
    /* Running from here: waits if a major collection is under way. */
    gc_unpark(t);
    /* Acquire: pairs with committers' release of the clock (their copies
     * are complete before the clock shows them). */
    intptr_t now = stm_load_acquire(&stm_g.time) & ~(intptr_t)1;
    if (now != t->carry_snapshot || t->read_set.count > 8 * STM__CACHE_BYTES / 16) {
        stm_cache_clear(t);
        stm_vec_clear(&t->read_set);
    }
    t->snapshot = now;
    t->carry_snapshot = now;
    stm_store_relaxed(&t->state, TX_REGULAR);
    t->ss_base = (size_t)(stm__tl.ss_top - t->ss_bottom);
    t->atomic = 0;
    t->tx_alloc_done = 0;
    t->tx_alloc_mark = stm__tl.nursery_cur;
    t->tx_slow_reads = 0;
    stm__tl.nursery_end = gc_nursery_alloc_end(t);
    stm__tl.prn = t->prn;
}

static void end_tx(stm_thread *t)
{
    stm_account_allocation(t);
    stm_vec_clear(&t->tx_old_private);
    stm_vec_clear(&t->tx_weak_gets);
    stm_store_relaxed(&t->state, TX_NONE);
    t->explicit_inevitable = false;
    tls_outside_tx();
    gc_park(t, GC_PARKED);
}

/* The clock leaves the inevitable state (odd) for new_time.  A commit does
 * this while it still holds its collection lock: a thief that takes the
 * lock next must read the new clock, or it would stamp our new committed
 * state (clock & ~1) - 1, below the commit point, and a reader whose
 * snapshot predates the commit would read that state next to older ones
 * without extending (DESIGN.md 3.6; found by the history checker). */
static void inevitable_clock_release(intptr_t new_time)
{
    /* Release: pairs with the acquire loads of the clock by readers,
     * committers and thieves (stm_current_stamp); everything this
     * transaction published is visible before the clock is even again.
     * A thief also synchronises with it through our lock's release. */
    stm_store_release(&stm_g.time, new_time);
}

static void release_inevitable(stm_thread *t, intptr_t new_time)
{
    inevitable_clock_release(new_time);
    pthread_mutex_unlock(&stm_g.inevitable_mutex);
    (void)t;
}

STM_API void stm_become_inevitable(void)
{
    stm_thread *t = attached_or_die("stm_become_inevitable");
    if (t->state == TX_NONE)
        stm_fatal("stm_become_inevitable called outside a transaction");
    if (t->state == TX_INEVITABLE)
        return;
    if (pthread_mutex_trylock(&stm_g.inevitable_mutex) != 0) {
        /* The holder may be stopped for a major collection: wait parked. */
        gc_park(t, GC_BLOCKED);
        pthread_mutex_lock(&stm_g.inevitable_mutex);
        gc_unpark(t);
    }
    intptr_t now = stm_load_relaxed(&stm_g.time);
    for (;;) {
        /* The clock is even: only the mutex holder makes it odd. */
        STM_ASSERT(!REV_IS_ODD(now));
        /* Acq_rel: acquire pairs with the committers' CAS (their
         * publications are visible); release is not needed but harmless. */
        if (stm_cas_acq_rel(&stm_g.time, &now, now + 1))
            break;
    }
    t->inevitable_time = now;
    /* From here on no shared commit can happen; what must hold is that
     * nothing we read or wrote has already been replaced.  That includes
     * the public copies thieves made of objects we are writing in place:
     * they are not in the read set. */
    const void *bad = NULL;
    stm_lock(t);
    stm_drain_stolen(t);
    stm_unlock(t);
    bool ok = now == t->snapshot || stm_validate(t, false, &bad);
    if (ok) {
        STM_MAP_FOREACH(&t->p2p, e) {
            intptr_t rev;
            /* Acquire: pairs with the committer's release of the copy.  A
             * lock holder either took its commit time before us and will
             * publish, or finds the clock odd and unlocks: wait and see. */
            while (REV_IS_LOCK(rev = stm_load_acquire(&((stm_header *)e->key)->revision)))
                stm_cpu_relax();
            if (!REV_IS_STAMP(rev)) {
                bad = (const void *)e->key;
                ok = false;
                break;
            }
        }
    }
    t->snapshot = now;
    if (!ok) {
        release_inevitable(t, now);
        stm_abort_tx(t, STM_ABORT_VALIDATE_INEVITABLE, bad);
    }
    stm_store_relaxed(&t->state, TX_INEVITABLE);
    stm_stat(t, STAT_inevitable, 1);
}

STM_API int stm_in_transaction(void)
{
    return stm_me && stm_me->state != TX_NONE;
}

STM_API int stm_is_inevitable(void)
{
    return stm_me && stm_me->state == TX_INEVITABLE;
}

/* ---- commit ------------------------------------------------------------ */

/* Drops the backups of objects written in place: they are committed. */
static void finish_pfp(stm_thread *t)
{
    for (size_t i = 0; i < t->pfp.count; i++) {
        stm_header *o = (stm_header *)t->pfp.items[i];
        stm_header *backup = (stm_header *)o->ident;
        size_t size = gc_object_size(backup);
        o->ident = backup->ident;
        o->flags &= ~F_PFP;
        gc_old_free(t, backup, size);
    }
    stm_vec_clear(&t->pfp);
}

static void unlock_written(stm_thread *t)
{
    for (size_t i = 0; i < t->write_locks.count; i += 2) {
        stm_header *r = (stm_header *)t->write_locks.items[i];
        /* Release: pairs with readers' acquire loads of the revision. */
        stm_store_release(&r->revision, (intptr_t)t->write_locks.items[i + 1]);
    }
    stm_vec_clear(&t->write_locks);
}

/* Locks every public copy in p2p in address order.  Returns false (with
 * all locks released) if one was already outdated. */
static bool lock_written(stm_thread *t, const void **bad)
{
    size_t n = t->p2p.count;
    STM_ASSERT(t->write_locks.capacity >= 2 * n);
    uintptr_t *keys = t->write_locks.items + n;   /* scratch in the upper half */
    size_t k = 0;
    STM_MAP_FOREACH(&t->p2p, e) keys[k++] = e->key;
    stm_sort_words(keys, n);
    /* Spread the sorted keys to the even slots, front to back: slot 2i is
     * below n+i, so no key is overwritten before it is read. */
    for (size_t i = 0; i < n; i++)
        t->write_locks.items[2 * i] = keys[i];
    t->write_locks.count = 0;
    for (size_t i = 0; i < n; i++) {
        stm_header *r = (stm_header *)t->write_locks.items[2 * i];
        unsigned spins = 0;
        for (;;) {
            /* Acquire: pairs with the release store that unlocks or
             * publishes, so a value seen here is complete. */
            intptr_t rev = stm_load_acquire(&r->revision);
            if (REV_IS_STAMP(rev)) {
                if (stm_cas_acq_rel(&r->revision, &rev, t->lock_value)) {
                    t->write_locks.items[2 * i + 1] = (uintptr_t)rev;
                    t->write_locks.count = 2 * i + 2;
                    break;
                }
                continue;
            }
            if (REV_IS_LOCK(rev)) {
                STM_ASSERT(rev != t->lock_value);
                /* Another committer holds it; it never waits while holding
                 * locks, so this ends.  Ordered locking: no cycle. */
                if (++spins < 128)
                    stm_cpu_relax();
                else
                    sched_yield();
                continue;
            }
            *bad = r;   /* outdated: someone committed a newer version */
            unlock_written(t);
            return false;
        }
    }
    return true;
}

/* Commits the running transaction.  On conflict it aborts (longjmp). */
static void commit_tx(stm_thread *t)
{
    /* The transaction function has returned: no C locals to protect. */
    gc_safe_point(t, GC_STOPPED_FREE);
    STM_TEST_POINT(STM_POINT_COMMIT_START);
    if (t->p2p.count == 0 && t->pfp.count == 0 && stm_load_relaxed(&t->stolen.count) == 0) {
        /* Wrote nothing that existed before: fresh objects become
         * protected by the PRN change alone (O(1)); no shared word is
         * written.  Reads were consistent at the snapshot. */
        /* No lock: with nothing written in place no thief can queue a
         * report for us, and thieves read t->prn only to diagnose an
         * escaped uncommitted object. */
        next_prn(t);
        if (t->state == TX_INEVITABLE)
            release_inevitable(t, t->inevitable_time);
        stm_stat(t, STAT_commits_readonly, 1);
        goto done;
    }
    stm_elide_lock_hooked(t, STM_POINT_COMMIT_LOCKED);   /* DESIGN.md, 12 */
    stm_drain_stolen(t);
    if (t->p2p.count == 0) {
        /* Only thread-owned objects were written, and none of them was
         * stolen meanwhile: serialise at the snapshot, without touching
         * the clock (DESIGN.md, "Private commits"). */
        finish_pfp(t);
        next_prn(t);
        if (t->state == TX_INEVITABLE)
            inevitable_clock_release(t->inevitable_time);
        stm_elide_unlock(t);
        STM_TEST_POINT(STM_POINT_COMMIT_UNLOCKED);
        if (t->state == TX_INEVITABLE)
            pthread_mutex_unlock(&stm_g.inevitable_mutex);
        stm_stat(t, STAT_commits_private, 1);
        goto done;
    }

    /* Shared commit: stubs for the new versions first (allocation may
     * fail: nothing is locked yet). */
    for (;;) {
        /* Memory for the locks and stubs, before anything is locked (the
         * map may have grown while we waited for an inevitable one). */
        if (!stm_vec_reserve(&t->write_locks, 2 * t->p2p.count) ||
            !stm_vec_reserve(&t->stub_memory, t->p2p.count) ||
            !stm_vec_reserve(&t->young_stubs, t->p2p.count)) {
            stm_elide_unlock(t);
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
        }
        while (t->stub_memory.count < t->p2p.count) {
            void *mem = gc_old_alloc(t, sizeof(stm_stub));
            if (!mem) {
                stm_elide_unlock(t);
                stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, NULL);
            }
            stm_vec_push_reserved(&t->stub_memory, (uintptr_t)mem);
        }
        const void *bad = NULL;
        if (!lock_written(t, &bad)) {
            stm_elide_unlock(t);
            /* A public copy made by a thief from an object we modify in
             * place, since changed by a third thread, is STOLEN_MODIFIED. */
            const stm_header *mine =
                (const stm_header *)stm_map_find(&t->p2p, (uintptr_t)bad)->value;
            stm_abort_tx(t, (mine->flags & F_PFP) ? STM_ABORT_STOLEN_MODIFIED
                                                  : STM_ABORT_WRITE_CONFLICT,
                         bad);
        }
        intptr_t tstart;
        if (t->state == TX_INEVITABLE) {
            tstart = t->inevitable_time;
            break;
        }
        intptr_t now = stm_load_relaxed(&stm_g.time);
        bool got = false;
        while (!REV_IS_ODD(now)) {
            /* Acq_rel: acquire pairs with earlier committers' release (we
             * validate against what they published); release pairs with
             * the acquire loads of the clock in begin_tx/extension. */
            if (stm_cas_acq_rel(&stm_g.time, &now, now + 2)) {
                got = true;
                break;
            }
        }
        if (!got) {
            /* An inevitable transaction runs: shared commits wait for it.
             * Release everything first: it may need our locks. */
            unlock_written(t);
            stm_elide_unlock(t);
            gc_park(t, GC_BLOCKED_FREE);
            pthread_mutex_lock(&stm_g.inevitable_mutex);
            pthread_mutex_unlock(&stm_g.inevitable_mutex);
            gc_unpark(t);
            gc_check_doomed(t);
            stm_lock(t);
            stm_drain_stolen(t);
            continue;
        }
        tstart = now;
        STM_TEST_POINT(STM_POINT_COMMIT_LOCKED);
        if (tstart != t->snapshot) {
            const void *vbad = NULL;
            stm_stat(t, STAT_read_validations, 1);
            if (!stm_validate(t, true, &vbad)) {
                unlock_written(t);
                stm_elide_unlock(t);
                stm_abort_tx(t, STM_ABORT_VALIDATE_COMMIT, vbad);
            }
        }
        t->snapshot = tstart;
        break;
    }
    /* Point of no return.  Publish: each written public copy now forwards,
     * through a stub of ours, to our copy, which becomes protected. */
    for (size_t i = 0; i < t->write_locks.count; i += 2) {
        stm_header *r = (stm_header *)t->write_locks.items[i];
        void *mine = (void *)stm_map_find(&t->p2p, (uintptr_t)r)->value;
        stm_stub *s = (stm_stub *)t->stub_memory.items[--t->stub_memory.count];
        stm_init_stub(t, s, t, mine);   /* cannot fail: young_stubs reserved */
        /* Release: pairs with the acquire loads of revisions in
         * stm_resolve: the stub is complete before R points to it. */
        stm_store_release(&r->revision, (intptr_t)s);
    }
    stm_vec_clear(&t->write_locks);
    /* The read set may carry over to our next transaction (C5).  The
     * public copies we just replaced are outdated now, by us: put our
     * copies, the new versions, in their place (DESIGN.md O2).  Validation
     * could follow the old copy through our stub instead, but a thief
     * re-points that stub and path compression skips it, after which the
     * old copy looks replaced by someone else: a reader's steal made our
     * next commit abort (found by the random tester).  Such an entry is
     * one whose revision we just set to one of our stubs, possibly behind
     * a copy of ours that a thief published (F_MOVED, same content; set
     * under our lock, which we hold).  The scan is bounded: a larger read
     * set (duplicates pile up until compaction) is not carried over at
     * all, which costs the next transaction some slow-path reads but keeps
     * this commit O(writes + 256). */
    if (t->read_set.count > 256)
        t->read_set.count = 0;   /* begin_tx clears the cache: see below */
    for (size_t i = 0; i < t->read_set.count; i++) {
        const stm_header *o = (const stm_header *)t->read_set.items[i];
        while (stm_load_relaxed(&o->flags) & F_MOVED)
            o = (const stm_header *)stm_load_acquire(&o->revision);
        intptr_t rev = stm_load_acquire(&o->revision);
        if (!REV_IS_PTR(rev))
            continue;
        const stm_stub *s = (const stm_stub *)rev;
        if ((stm_load_relaxed(&s->hdr.flags) & F_STUB) && s->owner == t->index)
            t->read_set.items[i] = (uintptr_t)(stm_load_relaxed(&s->hdr.revision) & ~(intptr_t)3);
    }
    stm_map_clear(&t->p2p);
    finish_pfp(t);
    next_prn(t);
    if (t->state == TX_INEVITABLE)
        inevitable_clock_release(t->inevitable_time + 2);   /* before the unlock: see there */
    stm_elide_unlock(t);
    STM_TEST_POINT(STM_POINT_COMMIT_UNLOCKED);
    if (t->state == TX_INEVITABLE)
        pthread_mutex_unlock(&stm_g.inevitable_mutex);
    /* Our reads were valid at t->snapshot and our own commit is the only
     * one between it and +2: the cache stays valid (unless the read set
     * was dropped above: then C1 needs the cache cleared too). */
    t->carry_snapshot = t->read_set.count || !t->cache_fills.count ? t->snapshot + 2 : -1;
    stm_stat(t, STAT_commits_shared, 1);
done:
    stm_stat(t, STAT_commits, 1);
    STM_TEST_POINT(STM_POINT_COMMIT_DONE);
    {
        /* Adaptive length: a commit that reached the limit may grow it. */
        uint64_t work = tx_work(t);
        /* Bounded: everything a transaction creates stays reachable until
         * it commits, so endless growth would only feed the heap. */
        uint64_t cap = (uint64_t)stm_g.cfg.nursery_size * 8;
        if (cap < ((uint64_t)8 << 20))
            cap = (uint64_t)8 << 20;
        if (t->attempt == 0 && work >= t->work_limit && t->work_limit < cap)
            t->work_limit = t->work_limit * 2 < cap ? t->work_limit * 2 : cap;
    }
    end_tx(t);
}

/* ---- abort ------------------------------------------------------------- */

void stm_abort_tx(stm_thread *t, stm_abort_reason why, const void *obj)
{
    if (t->state == TX_INEVITABLE)
        stm_fatal("an inevitable transaction cannot abort (reason: %s)",
                  stm_abort_reason_name(why));
    if (!t->jb)
        stm_fatal("abort outside stm_run (reason: %s)", stm_abort_reason_name(why));
#ifdef STM_TESTING
    if (stm_test_abort_budget == 0)
        stm_fatal("unexpected abort (reason: %s, object %p)", stm_abort_reason_name(why), obj);
    if (stm_test_abort_budget > 0)
        stm_test_abort_budget--;
#endif
    STM_TEST_POINT(STM_POINT_ABORT);
    stm_lock(t);
    stm_drain_stolen(t);
    /* The remembered set loses the aborted attempt's own old objects
     * (fresh large objects, old private copies): garbage now, they would
     * keep what they point to alive.  Copies written in place stay: once
     * restored they hold committed state, which may point into the
     * nursery. */
    size_t kept = 0;
    for (size_t i = 0; i < t->old_to_trace.count; i++) {
        stm_header *o = (stm_header *)t->old_to_trace.items[i];
        if (o->revision == t->prn && !(o->flags & F_PFP))
            continue;
        t->old_to_trace.items[kept++] = (uintptr_t)o;
    }
    t->old_to_trace.count = kept;
    /* Undo in-place writes from the backups.  A backup whose state a thief
     * published carries F_MOVED and a pointer to that public copy (steal.c),
     * so copying it back also turns the object into that forwarder. */
    for (size_t i = 0; i < t->pfp.count; i++) {
        stm_header *o = (stm_header *)t->pfp.items[i];
        stm_header *backup = (stm_header *)o->ident;
        size_t size = gc_object_size(backup);
#ifdef STM_MUTANT_NO_BACKUP_RESTORE
        /* Planted bug (docs/TESTING.md, "Mutants"): only the header comes
         * back, the fields keep the aborted attempt's values. */
        memcpy(o, backup, sizeof(stm_header));
#else
        memcpy(o, backup, size);
#endif
        o->flags &= ~(F_BACKUP | F_WRITE_BARRIER);
        if (!stm_is_young(t, o)) {
            /* Old objects must be in the remembered set or carry the flag. */
            o->flags |= F_WRITE_BARRIER;
        }
        if (o->flags & F_MOVED) {
            /* o now forwards to the thief's public copy.  The memcpy above
             * wrote that pointer with a plain store, which orders nothing
             * for a reader's acquire load; store it again with release,
             * pairing with the acquire loads of revisions in stm_resolve:
             * the thief filled the copy before it released our lock, which
             * we took (found by TSan in intset, a reader seeing the copy
             * before its contents). */
            stm_store_release(&o->revision, stm_load_relaxed(&backup->revision));
        }
        gc_old_free(t, backup, size);
    }
    stm_vec_clear(&t->pfp);
    stm_map_clear(&t->p2p);
    next_prn(t);
    stm_unlock(t);

    stm_cache_clear(t);
    stm_vec_clear(&t->read_set);
    t->carry_snapshot = -1;
    stm__tl.ss_top = t->ss_bottom + t->ss_base;
    t->atomic = 0;

    stm_stat(t, STAT_aborts, 1);
    stm_counter_add(&t->aborts_by_reason[why], 1);
    t->have_abort = true;
    t->last_abort.reason = why;
    t->last_abort.object = obj;
    t->last_abort.object_tid = obj ? ((const stm_header *)obj)->tid : 0;
    t->last_abort.attempt = t->attempt + 1;

    uint64_t work = tx_work(t);
    uint64_t shrunk = work - work / 16;
    t->work_limit = shrunk < 65536 ? 65536 : shrunk;
    end_tx(t);
    longjmp(*t->jb, why == STM_ABORT_OUT_OF_MEMORY ? 2 : 1);
}

STM_API void stm_abort_and_retry(void)
{
    stm_thread *t = attached_or_die("stm_abort_and_retry");
    if (t->state == TX_NONE)
        stm_fatal("stm_abort_and_retry called outside a transaction");
    if (t->state == TX_INEVITABLE)
        stm_fatal("stm_abort_and_retry called in an inevitable transaction, which cannot abort");
    stm_abort_tx(t, STM_ABORT_EXPLICIT, NULL);
}

/* Randomised exponential backoff after a conflict, so that two threads
 * that keep colliding drift apart; guaranteed progress comes from the
 * inevitable retry after max_attempts. */
static void backoff(stm_thread *t)
{
    unsigned shift = t->attempt < 12 ? t->attempt : 12;
    t->rng = t->rng * 1103515245u + 12345u;
    unsigned spins = (t->rng >> 8) & ((1u << shift) - 1);
    for (unsigned i = 0; i < spins * 8; i++)
        stm_cpu_relax();
    if (t->attempt > 4)
        sched_yield();
}

STM_API int stm_run(stm_tx_fn *fn, void *arg)
{
    stm_thread *t = attached_or_die("stm_run");
    if (!fn)
        stm_fatal("stm_run: the transaction function is NULL");
    if (t->state != TX_NONE) {
        /* Flat nesting: part of the enclosing transaction. */
        for (;;) {
            int r = fn(arg);
            if (r == STM_DONE)
                return STM_OK;
            if (r != STM_CONTINUE)
                stm_fatal("stm_run: the transaction function returned %d "
                          "(expected STM_DONE or STM_CONTINUE)", r);
        }
    }
    jmp_buf jb;
    jmp_buf *volatile saved = t->jb;
    t->jb = &jb;
    t->attempt = 0;
#ifdef STM_BASELINE
    /* The baseline never conflicts (single thread, no barriers): no
     * checkpoint is needed; an abort request is then fatal. */
    int why = 0;
    t->jb = NULL;
#else
    int why = setjmp(jb);
#endif
    if (why == 2) {
        t->jb = saved;
        t->attempt = 0;
        return STM_ENOMEM;
    }
    if (why) {
        t->attempt++;
        backoff(t);
    }
    for (;;) {
        begin_tx(t);
        if (t->attempt >= stm_g.cfg.max_attempts)
            stm_become_inevitable();   /* cannot fail from here on: progress */
        int r;
        for (;;) {
            r = fn(arg);
            if (r == STM_CONTINUE && t->atomic > 0)
                continue;              /* atomic: no transaction break */
            break;
        }
        if (r != STM_DONE && r != STM_CONTINUE)
            stm_fatal("stm_run: the transaction function returned %d "
                      "(expected STM_DONE or STM_CONTINUE)", r);
        if (t->atomic > 0)
            stm_fatal("stm_run: the transaction function returned with %d atomic "
                      "section(s) still open", t->atomic);
        if ((size_t)(stm__tl.ss_top - t->ss_bottom) != t->ss_base)
            stm_fatal("stm_run: the transaction function left the shadow stack at depth "
                      "%zu (it began at %zu): pushes and pops must balance",
                      (size_t)(stm__tl.ss_top - t->ss_bottom), t->ss_base);
        commit_tx(t);
        t->attempt = 0;
        if (r == STM_DONE)
            break;
    }
    t->jb = saved;
    return STM_OK;
}

STM_API int stm_begin_inevitable(void)
{
    stm_thread *t = attached_or_die("stm_begin_inevitable");
    if (t->state != TX_NONE)
        return STM_ESTATE;
    t->carry_snapshot = -1;   /* empty read set: becoming inevitable cannot fail */
    begin_tx(t);
    t->explicit_inevitable = true;
    stm_become_inevitable();
    return STM_OK;
}

STM_API int stm_commit(void)
{
    stm_thread *t = attached_or_die("stm_commit");
    if (t->state == TX_NONE || !t->explicit_inevitable)
        return STM_ESTATE;
    if (t->atomic > 0)
        return STM_ESTATE;
    commit_tx(t);
    return STM_OK;
}

/* ---- atomic sections and chunking -------------------------------------- */

STM_API void stm_atomic_begin(void)
{
    stm_thread *t = attached_or_die("stm_atomic_begin");
    if (t->state == TX_NONE)
        stm_fatal("stm_atomic_begin called outside a transaction");
    t->atomic++;
}

STM_API void stm_atomic_end(void)
{
    stm_thread *t = attached_or_die("stm_atomic_end");
    if (t->state == TX_NONE)
        stm_fatal("stm_atomic_end called outside a transaction");
    if (t->atomic == 0)
        stm_fatal("stm_atomic_end without a matching stm_atomic_begin");
    t->atomic--;
}

STM_API int stm_atomic_depth(void)
{
    return stm_me ? stm_me->atomic : 0;
}

STM_API int stm_should_break(void)
{
    stm_thread *t = stm_me;
    if (!t || t->state == TX_NONE)
        return 0;
    gc_safe_point(t, GC_STOPPED);
    if (t->atomic > 0)
        return 0;
    return tx_work(t) >= t->work_limit;
}
