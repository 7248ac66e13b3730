/* testing.c -- the entry points of tests/support/stm_testing.h, only in
 * builds with STM_TESTING (never in release). */
#include "stm/core.h"

#ifdef STM_TESTING
#include "tests/support/stm_testing.h"

__thread stm_test_hook_fn *stm_test_hooks[STM_POINT_COUNT];
__thread void *stm_test_hook_args[STM_POINT_COUNT];
__thread long stm_test_abort_budget = -1;

STM_API void stm_test_set_hook(stm_test_point point, stm_test_hook_fn *fn, void *arg)
{
    if ((unsigned)point < STM_POINT_COUNT) {
        stm_test_hooks[point] = fn;
        stm_test_hook_args[point] = arg;
    }
}

STM_API void stm_test_set_max_aborts(long n) { stm_test_abort_budget = n; }

STM_API stm_test_kind stm_test_kind_of(const void *obj)
{
    const stm_header *h = obj;
    stm_thread *t = stm_me;
    intptr_t rev = stm_load_acquire(&h->revision);
    uint32_t fl = stm_load_relaxed(&h->flags);
    if (fl & F_BACKUP)
        return STM_KIND_BACKUP;
    if (fl & F_STUB)
        return REV_IS_STUBPTR(rev) ? STM_KIND_STUB : STM_KIND_PUBLIC_OUTDATED;
    if (fl & F_MOVED)
        return STM_KIND_MOVED;
    if (fl & F_PUBLIC) {
        if (REV_IS_LOCK(rev))
            return STM_KIND_LOCKED;
        return REV_IS_STAMP(rev) ? STM_KIND_PUBLIC : STM_KIND_PUBLIC_OUTDATED;
    }
    if (t && rev == t->prn && t->state != TX_NONE)
        return (fl & F_PFP) ? STM_KIND_PRIVATE_FROM_PROTECTED : STM_KIND_PRIVATE;
    return STM_KIND_PROTECTED;
}

STM_API const char *stm_test_kind_name(stm_test_kind k)
{
    static const char *const names[] = { "private", "private_from_protected", "protected",
                                         "public", "public_outdated", "stub", "backup",
                                         "moved", "locked" };
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

STM_API void *stm_test_backup_of(const void *obj)
{
    const stm_header *h = obj;
    return (h->flags & F_PFP) ? (void *)h->ident : NULL;
}

STM_API int stm_test_is_young(const void *obj) { return stm_me && stm_is_young(stm_me, obj); }
STM_API unsigned stm_test_owner_of(const void *obj) { return gc_owner_of(obj); }
STM_API unsigned stm_test_thread_index(void) { return stm_me ? stm_me->index : 0; }
STM_API intptr_t stm_test_global_time(void) { return stm_load_acquire(&stm_g.time); }
STM_API intptr_t stm_test_last_commit_point(void)
{
    stm_thread *t = stm_me;
    if (!t)
        return -1;
    /* Only a shared commit sets carry_snapshot to snapshot + 2 (its
     * commit time t is the snapshot, the clock is now t + 2); other
     * commits leave it at the begin time, never above the snapshot. */
    return t->carry_snapshot == t->snapshot + 2 ? t->snapshot + 1 : t->snapshot;
}
STM_API intptr_t stm_test_snapshot(void) { return stm_me ? stm_me->snapshot : -1; }
STM_API size_t stm_test_read_set_size(void) { return stm_me ? stm_me->read_set.count : 0; }
STM_API void stm_test_sort_words(uintptr_t *items, size_t n) { stm_sort_words(items, n); }
#endif
