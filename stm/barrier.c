/* barrier.c -- the slow paths of the read and write barriers, the read
 * cache, and read-set validation (docs/DESIGN.md, "Barriers").
 *
 * stm_resolve() turns any pointer a transaction may hold (its own private
 * or protected copy, a public copy current or outdated, a stub, a prebuilt
 * object, a forwarder left by a thief) into the copy the transaction must
 * use, and records it for validation.  The read cache then maps the
 * original pointer to that copy, so the next stm_read of the same pointer
 * takes the inline fast path whatever kind of copy it names. */
#include <string.h>

#include "stm/core.h"
#include "stm/elide.h"
#include "gc/pages.h"

static inline stm__cache_entry *way0(stm_thread *t, const void *key)
{
    return (stm__cache_entry *)((char *)t->tl->cache + (uint16_t)(uintptr_t)key);
}
static inline stm__cache_entry *way1(stm_thread *t, const void *key)
{
    return (stm__cache_entry *)((char *)t->tl->cache_way1 + (uint16_t)(uintptr_t)key);
}

/* The entry holding `key`, in either way, or NULL. */
stm__cache_entry *stm_cache_find(stm_thread *t, const void *key)
{
    stm__cache_entry *e = way0(t, key);
    if (e->key == key)
        return e;
    e = way1(t, key);
    return e->key == key ? e : NULL;
}

/* Rebuilds the logs from the cache itself (8192 entries): keys evicted
 * and inserted again pile up in the logs otherwise.  Called when the log
 * outgrows the cache several times over, so it is amortised O(1). */
static void compact_cache_logs(stm_thread *t)
{
    stm_vec_clear(&t->cache_fills);
    stm_vec_clear(&t->cache_aliases);
    size_t n = STM__CACHE_BYTES / sizeof(stm__cache_entry);
    for (int w = 0; w < 2; w++) {
        stm__cache_entry *ways = w ? t->tl->cache_way1 : t->tl->cache;
        for (size_t i = 0; i < n; i++) {
            stm__cache_entry *e = &ways[i];
            if (!e->key)
                continue;
            /* The logs never need more room than they had. */
            stm_vec_push_reserved(&t->cache_fills, (uintptr_t)e->key);
            if (e->value != e->key &&
                stm_load_relaxed(&((stm_header *)e->value)->revision) != t->prn)
                stm_vec_push_reserved(&t->cache_aliases, (uintptr_t)e->key);
        }
    }
}

/* New keys go to way 0; the entry they displace moves to way 1 (dropping
 * way 1's), so two pointers that share their low 16 bits both stay. */
void stm_cache_insert(stm_thread *t, const void *key, void *value)
{
    stm__cache_entry *e = stm_cache_find(t, key);
    if (!e) {
        if (t->cache_fills.count >= 4 * 2 * STM__CACHE_BYTES / sizeof(stm__cache_entry) &&
            stm_vec_reserve(&t->cache_aliases, 2 * STM__CACHE_BYTES / sizeof(stm__cache_entry)))
            compact_cache_logs(t);
        if (!stm_vec_push(&t->cache_fills, (uintptr_t)key))
            return;   /* not cached: correct, only slower */
        e = way0(t, key);
        if (e->key)
            *way1(t, key) = *e;
        e->key = key;
    }
    /* Aliases to our private copies are never redirected (they already
     * give the copy we write) nor forwarded while the transaction runs:
     * only the others are logged. */
    if (value != key && stm_load_relaxed(&((stm_header *)value)->revision) != t->prn &&
        !stm_vec_push(&t->cache_aliases, (uintptr_t)key)) {
        e->key = NULL;
        return;
    }
    e->value = value;
}

/* O(entries filled), not O(cache size). */
void stm_cache_clear(stm_thread *t)
{
    for (size_t i = 0; i < t->cache_fills.count; i++) {
        const void *key = (const void *)t->cache_fills.items[i];
        stm__cache_entry *e = stm_cache_find(t, key);
        if (e)
            e->key = NULL;
    }
    stm_vec_clear(&t->cache_fills);
    stm_vec_clear(&t->cache_aliases);
}

static inline bool forwarded(const void *copy)
{
    return !REV_IS_ODD(stm_load_relaxed(&((const stm_header *)copy)->revision));
}

/* `pub` (a public copy) now has our private copy `priv`: every cached
 * resolution to `pub`, or to a copy that has since been forwarded with the
 * same content (one of ours, stolen), must now give `priv` or be dropped
 * (DESIGN.md, C3).  Only logged aliases (key != value, value not private)
 * can resolve to `pub`: the entry keyed by `pub` itself is the caller's.
 * Any other entry can only go stale by a thief moving one of our copies,
 * which thieves count, so the full log is scanned only after a steal from
 * us.  Forwarders made by other threads' commits need no care: validation
 * catches them. */
void stm_cache_redirect(stm_thread *t, const void *pub, void *priv)
{
    if (t->cache_aliases.count > 1024) {
        /* Bound the work: forget every alias (they re-resolve once). */
        for (size_t i = 0; i < t->cache_aliases.count; i++) {
            const void *key = (const void *)t->cache_aliases.items[i];
            stm__cache_entry *e = stm_cache_find(t, key);
            if (e && e->value != key)
                e->key = NULL;
        }
        stm_vec_clear(&t->cache_aliases);
    }
    size_t kept = 0;
    for (size_t i = 0; i < t->cache_aliases.count; i++) {
        const void *key = (const void *)t->cache_aliases.items[i];
        stm__cache_entry *e = stm_cache_find(t, key);
        if (!e || e->value == key)
            continue;       /* replaced since: drop from the alias log */
        if (e->value == pub) {
            e->value = priv;
        } else if (forwarded(e->value)) {
            e->key = NULL;
            continue;
        }
        t->cache_aliases.items[kept++] = (uintptr_t)key;
    }
    t->cache_aliases.count = kept;
    uint64_t stolen = stm_load_relaxed(&t->stolen_from_me);
    if (stolen != t->steals_seen) {
        t->steals_seen = stolen;
        for (size_t i = 0; i < t->cache_fills.count; i++) {
            const void *key = (const void *)t->cache_fills.items[i];
            stm__cache_entry *e = stm_cache_find(t, key);
            if (e && forwarded(e->value))
                e->key = NULL;
        }
    }
}

/* ---- validation ------------------------------------------------------- */

/* Is the copy `obj`, read at our snapshot, still the current one?
 * Forwarders with the same content (F_MOVED) are followed. */
static bool still_current(stm_thread *t, const stm_header *obj, bool at_commit)
{
    for (;;) {
        /* Acquire: pairs with the release stores that publish forwarders,
         * so that the flags of a forwarder are seen with its pointer. */
        intptr_t rev = stm_load_acquire(&obj->revision);
        if (REV_IS_PRN(rev) || REV_IS_STAMP(rev))
            return true;
        if (REV_IS_LOCK(rev)) {
            if (rev == t->lock_value)
                return true;
            if (at_commit)
                return false;   /* waiting could deadlock with its committer */
            stm_cpu_relax();    /* in flight: the committer will finish */
            continue;
        }
        if (REV_IS_PTR(rev)) {
            const stm_header *next = (const stm_header *)rev;
            /* Same content elsewhere (stolen or collected): follow. */
            if (stm_load_relaxed(&obj->flags) & F_MOVED) {
                obj = next;
                continue;
            }
            /* Outdated by one of our own commits (a transaction carrying
             * its read set over): the newer version is ours. */
            if ((stm_load_relaxed(&next->flags) & F_STUB) &&
                ((const stm_stub *)next)->owner == t->index) {
                obj = next;
                continue;
            }
            return false;
        }
        if (REV_IS_STUBPTR(rev))   /* our own stub (only reached as above) */
            return true;
        return false;
    }
}

bool stm_validate(stm_thread *t, bool at_commit, const void **bad)
{
#ifdef STM_MUTANT_NO_VALIDATION
    /* Planted bug (docs/TESTING.md, "Mutants"): every read set passes, so
     * stale reads are neither aborted in flight nor at commit.  The random
     * tester and the history checker must catch it. */
    return true;
#endif
    for (size_t i = 0; i < t->read_set.count; i++) {
        const stm_header *o = (const stm_header *)t->read_set.items[i];
        if (!still_current(t, o, at_commit)) {
            *bad = o;
            return false;
        }
    }
    return true;
}

/* Are the public copies we are replacing (the keys of p2p) still current?
 * Most are in the read set too, but not the public copy a thief made of an
 * object we write in place: the object itself is in the read set as our
 * own copy, which its PRN keeps "current" whatever happened to the stolen
 * committed state.  Without this check an extension could pass after a
 * third thread replaced that state, and the transaction would then read
 * the newer version of the object it is writing (found by the random
 * tester, tests/model/regressions.txt). */
static bool written_still_current(stm_thread *t, const void **bad)
{
    if (stm_load_relaxed(&t->stolen.count)) {
        stm_lock(t);
        stm_drain_stolen(t);
        stm_unlock(t);
    }
    STM_MAP_FOREACH(&t->p2p, e) {
        intptr_t rev;
        /* Acquire: pairs with the committer's release of the copy; a lock
         * holder never waits for us, so the spin ends. */
        while (REV_IS_LOCK(rev = stm_load_acquire(&((stm_header *)e->key)->revision)))
            stm_cpu_relax();
        if (!REV_IS_STAMP(rev)) {
            *bad = (const void *)e->key;
            return false;
        }
    }
    return true;
}

/* A read met a copy committed after our snapshot: move the snapshot to now
 * if everything read or being replaced is still current (extendable
 * timestamps), otherwise abort.  Keeps every attempt consistent (opacity). */
void stm_extend_snapshot(stm_thread *t, const void *why)
{
    /* Acquire: pairs with committers' release of the clock. */
    intptr_t now = stm_load_acquire(&stm_g.time) & ~(intptr_t)1;
    const void *bad = NULL;
    stm_stat(t, STAT_read_validations, 1);
    if (!stm_validate(t, false, &bad) || !written_still_current(t, &bad))
        stm_abort_tx(t, STM_ABORT_VALIDATE_INFLIGHT, bad ? bad : why);
    t->snapshot = now;
}

/* ---- resolution ------------------------------------------------------- */

static STM_COLD void not_in_tx(const char *what)
{
    if (!stm_me)
        stm_fatal("%s: the calling thread is not attached (call stm_thread_attach)", what);
    stm_fatal("%s called outside a transaction", what);
}

/* Objects evicted from the read cache and read again are recorded again:
 * once the read set doubles, duplicates are removed (sort + unique), so
 * its size stays proportional to the objects read, amortised O(log n). */
static void record_read(stm_thread *t, const void *obj)
{
    if (t->read_set.count >= t->read_set_compact_at && t->read_set.count > 1) {
        stm_sort_words(t->read_set.items, t->read_set.count);
        size_t kept = 0;
        for (size_t i = 0; i < t->read_set.count; i++)
            if (kept == 0 || t->read_set.items[kept - 1] != t->read_set.items[i])
                t->read_set.items[kept++] = t->read_set.items[i];
        t->read_set.count = kept;
        t->read_set_compact_at = kept * 2 > 4096 ? kept * 2 : 4096;
    } else if (t->read_set_compact_at == 0) {
        t->read_set_compact_at = 4096;
    }
    if (!stm_vec_push(&t->read_set, (uintptr_t)obj))
        stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, obj);
}

/* A cached key resolves to itself only if it was recorded (C1): skip the
 * duplicate that a write, or a read through another alias, would add. */
static void record_read_once(stm_thread *t, const void *obj)
{
    if (!stm_cache_find(t, obj))
        record_read(t, obj);
}

/* Our private copy of the public `pub`, if we wrote it in this
 * transaction (including copies reported by thieves). */
static void *private_copy_of(stm_thread *t, const stm_header *pub)
{
    stm_map_entry *e = stm_map_find(&t->p2p, (uintptr_t)pub);
    if (e)
        return (void *)e->value;
    if (stm_load_relaxed(&t->stolen.count)) {
        stm_lock(t);
        stm_drain_stolen(t);
        stm_unlock(t);
        e = stm_map_find(&t->p2p, (uintptr_t)pub);
        if (e)
            return (void *)e->value;
    }
    return NULL;
}

/* Path compression: `head`, an outdated public copy (or a stub already
 * re-pointed to a public copy) that `hops` links lead from, is made to point
 * straight at `current`, the newest public copy.  Without it every change of
 * hands adds links that every later reader through the same pointer walks
 * again.  Only public copies are shortened: a non-public forwarder (MOVED)
 * promises the same content as its target, which validation relies on. */
static void compress(stm_header *head, intptr_t head_rev, unsigned hops, const stm_header *current)
{
    if (head && hops >= 2 && (const stm_header *)head != current) {
        /* Release: pairs with the acquire loads in stm_resolve (the
         * target is complete: we read it after an acquire ourselves).  A
         * failed CAS means someone else shortened it: fine. */
        stm_cas_release(&head->revision, &head_rev, (intptr_t)current);
    }
}

void *stm_resolve(stm_thread *t, const void *start)
{
    const stm_header *obj = start;
    unsigned spins = 0;
    stm_header *head = NULL;     /* for path compression */
    intptr_t head_rev = 0;
    unsigned hops = 0;
    for (;;) {
        /* Acquire: pairs with every release store of a revision (commit
         * publication, unlock, stealing, minor-collection forwarding), so
         * that the copy a revision leads to is complete when we read it. */
        intptr_t rev = stm_load_acquire(&obj->revision);
        if (rev == t->prn)
            return (void *)obj;                    /* private */
        if (REV_IS_PRN(rev)) {
            /* Protected: ours, or another thread's reached through raw
             * memory (a global root holding a non-published object). */
            unsigned owner = gc_owner_of(obj);
            if (owner == t->index) {
                record_read_once(t, obj);
                return (void *)obj;
            }
            if (owner == 0)
                stm_fatal("stm_read/stm_write on %p, which is not an stm object (or was freed)",
                          (const void *)obj);
            obj = stm_steal(t, obj, owner);
            continue;
        }
        if (REV_IS_STAMP(rev)) {
            STM_ASSERT(stm_load_relaxed(&obj->flags) & F_PUBLIC);
            compress(head, head_rev, hops, obj);
            head = NULL;
            if (stm_load_relaxed(&obj->flags) & F_PUBLIC_TO_PRIVATE) {
                void *mine = private_copy_of(t, obj);
                if (mine)
                    return mine;
            }
            if (rev > t->snapshot) {
                stm_extend_snapshot(t, obj);
                continue;
            }
            record_read_once(t, obj);
            return (void *)obj;
        }
        if (REV_IS_LOCK(rev)) {
            /* A committer is publishing a newer version; it holds the lock
             * only briefly and never waits while holding it. */
            if (++spins > 1000)
                sched_yield();
            stm_cpu_relax();
            continue;
        }
        if (REV_IS_STUBPTR(rev)) {
            const stm_stub *s = (const stm_stub *)obj;
            unsigned owner = (unsigned)s->owner;
            if (owner == t->index) {
                obj = (const stm_header *)(rev & ~(intptr_t)3);
                continue;
            }
            obj = stm_steal(t, obj, owner);
            continue;
        }
        STM_ASSERT(REV_IS_PTR(rev));
        if (!head && (stm_load_relaxed(&obj->flags) & (F_PUBLIC | F_MOVED)) == F_PUBLIC) {
            head = (stm_header *)obj;
            head_rev = rev;
            hops = 0;
        }
        hops++;
        obj = (const stm_header *)rev;             /* newer or moved copy */
    }
}

STM_API void *stm__read_slow(const void *obj)
{
    stm_thread *t = stm_me;
    if (STM__UNLIKELY(!t || t->state == TX_NONE))
        not_in_tx("stm_read");
    if (!obj)
        stm_fatal("stm_read called on NULL");
    gc_safe_point(t, GC_STOPPED);
    stm_stat(t, STAT_read_slow, 1);
    t->tx_slow_reads++;
    void *res = stm_resolve(t, obj);
    stm_cache_insert(t, obj, res);
    return res;
}

/* Makes the old private object `o` tracked by the remembered set. */
static void remember(stm_thread *t, stm_header *o)
{
    if (stm_load_relaxed(&o->flags) & F_WRITE_BARRIER) {
        if (!stm_vec_push(&t->old_to_trace, (uintptr_t)o))
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, o);
        /* Relaxed RMW: a thief holding our lock may read the flags of a
         * copy we write in place (looking for F_PFP) at the same time. */
        stm_fetch_and_relaxed(&o->flags, ~F_WRITE_BARRIER);
    }
}

#ifdef STM_BASELINE
STM_API void *stm__write_slow(void *obj)
{
    stm_thread *t = stm_me;
    if (STM__UNLIKELY(!t || t->state == TX_NONE))
        not_in_tx("stm_write");
    remember(t, obj);
    return obj;
}
#else
STM_API void *stm__write_slow(void *obj)
{
    stm_thread *t = stm_me;
    if (STM__UNLIKELY(!t || t->state == TX_NONE))
        not_in_tx("stm_write");
    if (!obj)
        stm_fatal("stm_write called on NULL");
    gc_safe_point(t, GC_STOPPED);
    stm_stat(t, STAT_write_slow, 1);
    for (;;) {
        stm_header *cur = stm_resolve(t, obj);
        if (stm_load_relaxed(&cur->revision) == t->prn) {   /* already private */
            remember(t, cur);
            if (cur != obj)
                stm_cache_insert(t, obj, cur);
            return cur;
        }
        size_t size = gc_object_size(cur);
        if (!(stm_load_relaxed(&cur->flags) & F_PUBLIC)) {
            /* Our protected copy: write in place, keeping a backup of the
             * committed state.  Under our lock, so that a thief sees either
             * the protected object or (flag set) its backup. */
            stm_header *backup = gc_old_alloc(t, size);
            if (!backup || !stm_vec_reserve(&t->pfp, 1))
                stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, cur);
            stm_elide_lock(t);   /* DESIGN.md, 12 */
            if (stm_load_relaxed(&cur->flags) & F_MOVED) {
                /* Stolen since we resolved it: it is public now. */
                stm_elide_unlock(t);
                gc_old_free(t, backup, size);
                continue;
            }
            memcpy(backup, cur, size);
            backup->flags |= F_BACKUP;
            cur->ident = (uintptr_t)backup;
            cur->flags |= F_PFP;
            stm_store_relaxed(&cur->revision, t->prn);
            stm_vec_push_reserved(&t->pfp, (uintptr_t)cur);
            stm_elide_unlock(t);
            stm_stat(t, STAT_backups_made, 1);
            remember(t, cur);
            stm_cache_insert(t, obj, cur);
            if (cur != obj)
                stm_cache_insert(t, cur, cur);
            return cur;
        }
        /* A public copy: copy on write.  The copy goes into the nursery if
         * it fits without a collection, else into old space; the write
         * barrier never collects. */
        size_t rounded = stm_round_size(size);
        stm_header *copy = rounded <= stm_g.large_threshold ? gc_nursery_take(t, rounded) : NULL;
        bool young = copy != NULL;
        if (!young) {
            copy = gc_old_alloc(t, size);
            if (!copy)
                stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, cur);
        }
        /* The header of a public copy is racy (locks, hint flags): copy the
         * body only, and build the header. */
        memcpy(copy + 1, cur + 1, size - sizeof(stm_header));
        copy->tid = cur->tid;
        copy->flags = stm_load_relaxed(&cur->flags) & F_COPY_MASK;
        copy->revision = t->prn;
        copy->ident = cur->ident ? cur->ident : (uintptr_t)cur;
        if (!stm_map_put(&t->p2p, (uintptr_t)cur, (uintptr_t)copy) ||
            (!young && !stm_vec_push(&t->old_to_trace, (uintptr_t)copy)))
            stm_abort_tx(t, STM_ABORT_OUT_OF_MEMORY, cur);
        /* A hint for other resolutions of `cur` (ours): relaxed is enough,
         * since only this thread acts on its own map. */
        stm_fetch_or_relaxed(&cur->flags, F_PUBLIC_TO_PRIVATE);
        stm_cache_redirect(t, cur, copy);
        stm_cache_insert(t, obj, copy);
        stm_cache_insert(t, cur, copy);
        return copy;
    }
}
#endif /* STM_BASELINE */
