/* test_objects.c -- the life of one object's copies (docs/DESIGN.md 1, 4):
 * allocate -> private, commit -> protected, write -> private from
 * protected with a backup, commit or abort; public objects (prebuilt,
 * published, stolen) written -> private copy, commit -> outdated + stub;
 * stealing young, old and in-place-modified objects.
 *
 * Kinds of copies are only observable through the STM_TESTING hooks; in
 * release builds the tests keep their pointer and value checks. */
#include "support/tx_macros.h"

TestSuite(objects, .init = ts_setup, .fini = ts_teardown, .timeout = 60);

#ifdef STM_TESTING
#define KIND(p, k) CHECK_KIND(p, k)
#else
#define KIND(p, k) ((void)(p))
#endif

TS_PREBUILT_NODE(g_node);
TS_PREBUILT_NODE(g_other);

/* A pointer handed between threads through plain memory (not a global
 * root): the way the brief's "raw" stealing happens. */
static node *volatile shared_raw;

/* ------------------------------------------------------------------------ */
/* allocate -> private -> (commit) protected                                 */
/* ------------------------------------------------------------------------ */

typedef struct ctx {
    node *n, *m, *c, *c2;
    long v;
    int attempts;
    intptr_t rev;
    void *backup;
} ctx;

static int tx_alloc_check_private(void *arg)
{
    ctx *cx = arg;
    node *n = ts_new_node(41, NULL, NULL);
    KIND(n, STM_KIND_PRIVATE);
#ifdef STM_TESTING
    CHECK(stm_test_is_young(n), "a fresh small object must be in the nursery");
    CHECK_EQ(stm_test_owner_of(n), stm_test_thread_index());
    CHECK(stm_test_backup_of(n) == NULL, "a fresh object has no backup");
#endif
    CHECK_PTR_EQ(stm_read(n), n);
    CHECK_PTR_EQ(stm_write(n), n);
    CHECK_EQ(RD(n)->value, 41);
    cx->n = n;
    cx->rev = n->hdr.revision;
    return STM_DONE;
}

Test(objects, allocate_gives_private_young_object)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_check_private, &cx);
}

Test(objects, allocate_in_inevitable_transaction_gives_private)
{
    TX_BEGIN();
    node *n = ts_new_node(5, NULL, NULL);
    KIND(n, STM_KIND_PRIVATE);
    CHECK_PTR_EQ(stm_read(n), n);
    CHECK_PTR_EQ(stm_write(n), n);
    TX_COMMIT();
    KIND(n, STM_KIND_PROTECTED);
}

static int tx_check_protected(void *arg)
{
    ctx *cx = arg;
    KIND(cx->n, STM_KIND_PROTECTED);
    CHECK_PTR_EQ(stm_read(cx->n), cx->n);
    CHECK_EQ(RD(cx->n)->value, 41);
    KIND(cx->n, STM_KIND_PROTECTED);   /* reading does not change the kind */
    return STM_DONE;
}

Test(objects, commit_turns_private_into_protected)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_check_private, &cx);
    stm_push_root(cx.n);
    KIND(cx.n, STM_KIND_PROTECTED);
    ts_run(tx_check_protected, &cx);
    cx.n = stm_pop_root();
}

/* Commit protects all private objects by changing the PRN only: no header
 * of a committed object is rewritten (docs/DESIGN.md 1.2, "in O(1)"). */
static int tx_alloc_many(void *arg)
{
    ctx *cx = arg;
    node *prev = NULL;
    for (int i = 0; i < 50; i++)
        prev = ts_new_node(i, prev, NULL);
    cx->n = prev;
    cx->rev = prev->hdr.revision;
    return STM_DONE;
}

Test(objects, commit_rewrites_no_object_header)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_many, &cx);
    long i = 49;
    for (node *p = cx.n; p; p = p->left, i--) {
        CHECK_EQ(p->hdr.revision, cx.rev);
        CHECK_EQ(p->value, i);
        KIND(p, STM_KIND_PROTECTED);
    }
    CHECK_EQ(i, -1);
}

/* ------------------------------------------------------------------------ */
/* protected -> private from protected (+ backup) -> commit / abort          */
/* ------------------------------------------------------------------------ */

static int tx_write_protected(void *arg)
{
    ctx *cx = arg;
    stm_stats before = ts_stats();
    node *w = WR(cx->n);
    CHECK_PTR_EQ(w, cx->n);           /* written in place */
    KIND(w, STM_KIND_PRIVATE_FROM_PROTECTED);
#ifdef STM_TESTING
    node *b = stm_test_backup_of(w);
    CHECK(b != NULL, "a private-from-protected object has a backup");
    CHECK_PTR_NEQ(b, w);
    KIND(b, STM_KIND_BACKUP);
    CHECK_EQ(b->value, 41);
    cx->backup = b;
#endif
    w->value = 42;
    w = WR(cx->n);                    /* second write: same copy, no new backup */
    CHECK_PTR_EQ(w, cx->n);
    w->value = 43;
#ifdef STM_TESTING
    CHECK_PTR_EQ(stm_test_backup_of(w), cx->backup);
    CHECK_EQ(((node *)cx->backup)->value, 41);   /* the backup keeps the committed state */
#endif
    CHECK_PTR_EQ(stm_read(cx->n), cx->n);
    CHECK_EQ(RD(cx->n)->value, 43);
    stm_stats after = ts_stats();
    CHECK_EQ(DELTA(after, before, backups_made), 1);
    return STM_DONE;
}

Test(objects, write_protected_gives_private_from_protected_with_backup)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_check_private, &cx);
    stm_stats before = ts_stats();
    ts_run(tx_write_protected, &cx);
    stm_stats after = ts_stats();
    KIND(cx.n, STM_KIND_PROTECTED);
#ifdef STM_TESTING
    CHECK(stm_test_backup_of(cx.n) == NULL, "commit drops the backup");
#endif
    CHECK_EQ(cx.n->value, 43);
    CHECK_EQ(DELTA(after, before, commits_private), 1);
    CHECK_EQ(DELTA(after, before, commits_shared), 0);
}

/* The same for an old protected object (promoted by a minor collection). */
static int tx_promote(void *arg)
{
    ctx *cx = arg;
    stm_push_root(cx->n);
    stm_minor_collect();
    cx->n = stm_pop_root();
#ifdef STM_TESTING
    CHECK(!stm_test_is_young(cx->n), "a rooted object survives a minor collection as old");
#endif
    return STM_DONE;
}

Test(objects, write_old_protected_gives_private_from_protected)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_check_private, &cx);
    ts_run(tx_promote, &cx);
    KIND(cx.n, STM_KIND_PROTECTED);
    ts_run(tx_write_protected, &cx);
    KIND(cx.n, STM_KIND_PROTECTED);
    CHECK_EQ(cx.n->value, 43);
}

static int tx_write_then_abort_once(void *arg)
{
    ctx *cx = arg;
    if (cx->attempts++ == 0) {
        node *w = WR(cx->n);
        KIND(w, STM_KIND_PRIVATE_FROM_PROTECTED);
        w->value = 999;
        w->left = ts_new_node(7, NULL, NULL);
        stm_abort_and_retry();
    }
    KIND(cx->n, STM_KIND_PROTECTED);
#ifdef STM_TESTING
    CHECK(stm_test_backup_of(cx->n) == NULL, "abort drops the backup");
#endif
    CHECK_EQ(RD(cx->n)->value, 41);
    CHECK(RD(cx->n)->left == NULL, "abort restores the pointer fields too");
    return STM_DONE;
}

Test(objects, abort_restores_private_from_protected)
{
    ctx cx = { 0 };
    ts_run(tx_alloc_check_private, &cx);
    ts_run(tx_write_then_abort_once, &cx);
    CHECK_EQ(cx.attempts, 2);
    CHECK_EQ(cx.n->value, 41);
    KIND(cx.n, STM_KIND_PROTECTED);
}

/* ------------------------------------------------------------------------ */
/* public -> private copy -> commit: outdated + stub                         */
/* ------------------------------------------------------------------------ */

static int tx_write_public(void *arg)
{
    ctx *cx = arg;
    node *pub = cx->n;
    CHECK_PTR_EQ(stm_read(pub), pub);
    KIND(pub, STM_KIND_PUBLIC);
    long old = RD(pub)->value;
    node *w = WR(pub);
    CHECK_PTR_NEQ(w, pub);            /* copy on write */
    KIND(w, STM_KIND_PRIVATE);
    KIND(pub, STM_KIND_PUBLIC);       /* the public copy itself is unchanged */
    CHECK(pub->hdr.flags & TS_FLAG_PUBLIC_TO_PRIVATE,
          "the public copy gets the PUBLIC_TO_PRIVATE hint (flags %#x)", pub->hdr.flags);
    CHECK_EQ(w->value, old);          /* the copy has the contents */
    CHECK_EQ(stm_get_tid(w), T_NODE);
    w->value = old + 1;
    CHECK_EQ(pub->value, old);        /* public copies are never written */
    CHECK_PTR_EQ(stm_read(pub), w);   /* later barriers give the private copy */
    CHECK_PTR_EQ(stm_write(pub), w);
    CHECK_PTR_EQ(stm_read(w), w);
    cx->m = w;
    cx->v = old + 1;
    return STM_DONE;
}

static void check_outdated_public(ctx *cx)
{
    node *pub = cx->n;
    KIND(pub, STM_KIND_PUBLIC_OUTDATED);
    node *stub = ts_forward(pub);
    CHECK(stub != NULL, "an outdated public copy points to a newer copy");
    KIND(stub, STM_KIND_STUB);
    CHECK_PTR_EQ(ts_stub_target(stub), cx->m);
#ifdef STM_TESTING
    CHECK_EQ(stm_test_owner_of(stub), stm_test_thread_index());
#endif
    KIND(cx->m, STM_KIND_PROTECTED);
    CHECK_EQ(pub->value, cx->v - 1);  /* still the old contents */
    CHECK_EQ(cx->m->value, cx->v);
}

static int tx_read_public_again(void *arg)
{
    ctx *cx = arg;
    CHECK_PTR_EQ(stm_read(cx->n), cx->m);
    CHECK_EQ(RD(cx->n)->value, cx->v);
    return STM_DONE;
}

Test(objects, write_prebuilt_gives_private_copy_and_commit_outdates_it)
{
    ts_register_prebuilt(&g_node, 5);
    ctx cx = { .n = &g_node };
    stm_stats before = ts_stats();
    ts_run(tx_write_public, &cx);
    stm_stats after = ts_stats();
    CHECK_EQ(DELTA(after, before, commits_shared), 1);
    CHECK_EQ(DELTA(after, before, stubs_created), 1);
    check_outdated_public(&cx);
    stm_push_root(cx.m);
    ts_run(tx_read_public_again, &cx);
    cx.m = stm_pop_root();
}

static int tx_make_pair(void *arg)
{
    ctx *cx = arg;
    node *leaf = ts_new_node(4, NULL, NULL);
    cx->n = ts_new_node(3, leaf, &g_other);
    return STM_DONE;
}

static int tx_read_published(void *arg)
{
    ctx *cx = arg;
    /* The original pointer forwards to the public copy. */
    CHECK_PTR_EQ(stm_read(cx->n), cx->c);
    node *p = RD(cx->c);
    CHECK_PTR_EQ(p, cx->c);
    /* Our own stub resolves to our own protected leaf. */
    CHECK_PTR_EQ(stm_read(p->left), cx->m);
    CHECK_EQ(RD(p->left)->value, 4);
    CHECK_PTR_EQ(stm_read(p->right), &g_other);
    return STM_DONE;
}

Test(objects, publish_makes_public_copy_with_stubs)
{
    ts_register_prebuilt(&g_other, 9);
    ctx cx = { 0 };
    ts_run(tx_make_pair, &cx);
    cx.m = cx.n->left;
    node *pub = stm_publish(cx.n);
    CHECK(pub != NULL, "stm_publish on a committed object outside a transaction");
    CHECK_PTR_NEQ(pub, cx.n);
    KIND(pub, STM_KIND_PUBLIC);
    KIND(cx.n, STM_KIND_MOVED);
    CHECK_PTR_EQ(ts_forward(cx.n), pub);
    CHECK_EQ(pub->value, 3);
    CHECK_PTR_EQ(pub->right, &g_other);      /* public references stay */
    KIND(pub->left, STM_KIND_STUB);          /* private ones become stubs */
    CHECK_PTR_EQ(ts_stub_target(pub->left), cx.m);
    KIND(cx.m, STM_KIND_PROTECTED);
    CHECK_PTR_EQ(stm_publish(pub), pub);     /* already public */
    cx.c = pub;
    ts_run(tx_read_published, &cx);

    /* A published object is written like any public one. */
    ctx w = { .n = pub };
    ts_run(tx_write_public, &w);
    check_outdated_public(&w);
}

/* ------------------------------------------------------------------------ */
/* stealing                                                                  */
/* ------------------------------------------------------------------------ */

/* A (the test's thread) commits N, optionally old, and hands the raw
 * pointer to B; B steals it; A then sees N forward to B's public copy. */
typedef struct steal_ctx {
    bool old;             /* promote N before handing it over */
    bool with_refs;       /* N.left = another protected node, N.right = g_other */
    node *n, *leaf;
    node *c, *c_leaf;
    unsigned a_index, b_index;
    long steals, stubs;
} steal_ctx;

static int tx_make_victim(void *arg)
{
    steal_ctx *sx = arg;
    node *leaf = sx->with_refs ? ts_new_node(70, NULL, NULL) : NULL;
    node *n = ts_new_node(7, leaf, sx->with_refs ? &g_other : NULL);
    if (sx->old) {
        stm_push_root(n);
        stm_minor_collect();
        n = stm_pop_root();
    }
    sx->n = n;
    sx->leaf = n->left;
    return STM_DONE;
}

static int tx_thief_reads(void *arg)
{
    steal_ctx *sx = arg;
    node *raw = shared_raw;
    stm_stats before = ts_stats();
    node *c = RD(raw);
    stm_stats after = ts_stats();
    CHECK_PTR_NEQ(c, raw);                 /* a new copy */
    KIND(c, STM_KIND_PUBLIC);
    KIND(raw, STM_KIND_MOVED);             /* N forwards to it */
    CHECK_PTR_EQ(ts_forward(raw), c);
    CHECK_EQ(c->value, 7);
    CHECK_EQ(stm_get_tid(c), T_NODE);
#ifdef STM_TESTING
    CHECK_EQ(stm_test_owner_of(c), sx->b_index);   /* in the thief's memory */
    CHECK(!stm_test_is_young(c), "public copies are old");
#endif
    CHECK_PTR_EQ(stm_read(raw), c);        /* cached now */
    sx->steals = DELTA(after, before, steals);
    sx->stubs = DELTA(after, before, stubs_created);
    if (sx->with_refs) {
        CHECK_PTR_EQ(c->right, &g_other);  /* a public reference stays */
        KIND(c->left, STM_KIND_STUB);      /* a reference to A's protected leaf: stub */
        CHECK_PTR_EQ(ts_stub_target(c->left), sx->leaf);
        node *l = RD(c->left);             /* stealing through the stub */
        CHECK_PTR_NEQ(l, sx->leaf);
        KIND(l, STM_KIND_PUBLIC);
        CHECK_EQ(l->value, 70);
        KIND(sx->leaf, STM_KIND_MOVED);
        KIND(c->left, STM_KIND_PUBLIC_OUTDATED);   /* the stub now forwards to l */
        CHECK_PTR_EQ(ts_forward(c->left), l);
        sx->c_leaf = l;
    }
    sx->c = c;
    return STM_DONE;
}

static void thief(void *arg)
{
    steal_ctx *sx = arg;
#ifdef STM_TESTING
    sx->b_index = stm_test_thread_index();
#endif
    ls_wait(1);
    ts_run(tx_thief_reads, sx);
    ls_set(2);
}

static int tx_owner_after_steal(void *arg)
{
    steal_ctx *sx = arg;
    CHECK_PTR_EQ(stm_read(sx->n), sx->c);
    CHECK_EQ(RD(sx->n)->value, 7);
    node *w = WR(sx->n);                    /* now public: copy on write */
    CHECK_PTR_NEQ(w, sx->n);
    CHECK_PTR_NEQ(w, sx->c);
    KIND(w, STM_KIND_PRIVATE);
    CHECK_EQ(w->value, 7);
    w->value = 8;
    return STM_DONE;
}

static void owner(void *arg)
{
    steal_ctx *sx = arg;
#ifdef STM_TESTING
    sx->a_index = stm_test_thread_index();
#endif
    ts_run(tx_make_victim, sx);
#ifdef STM_TESTING
    CHECK(stm_test_is_young(sx->n) == !sx->old, "victim in the expected generation");
#endif
    stm_push_root(sx->n);
    shared_raw = sx->n;
    ls_set(1);
    ls_wait(2);
    KIND(sx->n, STM_KIND_MOVED);
    ts_run(tx_owner_after_steal, sx);
    KIND(sx->c, STM_KIND_PUBLIC_OUTDATED);  /* our commit outdated B's copy */
    sx->n = stm_pop_root();
}

static void run_steal(steal_ctx *sx)
{
    if (sx->with_refs)
        ts_register_prebuilt(&g_other, 9);
    stm_stats before = ts_stats();
    two_threads(owner, thief, sx);
    stm_stats after = ts_stats();
    CHECK_EQ(sx->steals, 1);
    CHECK_EQ(sx->stubs, sx->with_refs ? 1 : 0);
    CHECK_EQ(DELTA(after, before, steals), sx->with_refs ? 2 : 1);
}

Test(objects, steal_old_protected_object)
{
    steal_ctx sx = { .old = true };
    run_steal(&sx);
}

Test(objects, steal_young_protected_object)
{
    steal_ctx sx = { .old = false };
    run_steal(&sx);
}

Test(objects, steal_replaces_private_references_by_stubs)
{
    steal_ctx sx = { .old = false, .with_refs = true };
    run_steal(&sx);
}

Test(objects, steal_old_object_with_references)
{
    steal_ctx sx = { .old = true, .with_refs = true };
    run_steal(&sx);
}

/* A young stolen object: the owner's next minor collection forwards the
 * owner's root to the thief's public copy instead of promoting it. */
static int tx_collect_with_root(void *arg)
{
    (void)arg;
    stm_minor_collect();
    return STM_DONE;
}

static void owner_collects(void *arg)
{
    steal_ctx *sx = arg;
    ts_run(tx_make_victim, sx);
    stm_push_root(sx->n);
    shared_raw = sx->n;
    ls_set(1);
    ls_wait(2);
    ts_run(tx_collect_with_root, NULL);
    node *r = stm_pop_root();
    CHECK_PTR_EQ(r, sx->c);
    KIND(r, STM_KIND_PUBLIC);
    CHECK_EQ(r->value, 7);
}

Test(objects, minor_collection_forwards_roots_of_stolen_young_objects)
{
    steal_ctx sx = { .old = false };
    two_threads(owner_collects, thief, &sx);
}

/* Stealing an object its owner is modifying in place: the thief copies the
 * committed state (the backup); the owner keeps its private version, and
 * its commit outdates the stolen copy. */
typedef struct pfp_ctx {
    bool old;
    bool owner_aborts;
    node *n, *c, *c2;
    int attempts;
    long b_value_after;
} pfp_ctx;

static int tx_victim_pfp(void *arg)
{
    pfp_ctx *px = arg;
    node *n = ts_new_node(1, NULL, NULL);
    if (px->old) {
        stm_push_root(n);
        stm_minor_collect();
        n = stm_pop_root();
    }
    px->n = n;
    return STM_DONE;
}

static int tx_owner_modifies(void *arg)
{
    pfp_ctx *px = arg;
    if (px->attempts++ == 0) {
        node *w = WR(px->n);
        CHECK_PTR_EQ(w, px->n);
        KIND(w, STM_KIND_PRIVATE_FROM_PROTECTED);
        w->value = 2;
        ls_set(1);
        ls_wait(2);                        /* B steals N now */
        /* We keep our private version. */
        KIND(px->n, STM_KIND_PRIVATE_FROM_PROTECTED);
        CHECK_PTR_EQ(stm_read(px->n), px->n);
        CHECK_EQ(RD(px->n)->value, 2);
        /* Reading the thief's copy gives our private version too. */
        CHECK_PTR_EQ(stm_read(px->c), px->n);
        if (px->owner_aborts)
            stm_abort_and_retry();
        return STM_DONE;
    }
    /* Retry after the abort: N forwards to the stolen (committed) state. */
    KIND(px->n, STM_KIND_MOVED);
    CHECK_PTR_EQ(ts_forward(px->n), px->c);
    CHECK_PTR_EQ(stm_read(px->n), px->c);
    CHECK_EQ(RD(px->n)->value, 1);
    return STM_DONE;
}

static int tx_thief_reads_pfp(void *arg)
{
    pfp_ctx *px = arg;
    node *c = RD(shared_raw);
    CHECK_PTR_NEQ(c, shared_raw);
    KIND(c, STM_KIND_PUBLIC);
    CHECK_EQ(c->value, 1);                 /* the committed state */
    px->c = c;
    return STM_DONE;
}

static int tx_thief_reads_pfp_again(void *arg)
{
    pfp_ctx *px = arg;
    /* A second steal of the same committed state gives the same copy. */
    px->c2 = RD(shared_raw);
    return STM_DONE;
}

static int tx_thief_reads_latest(void *arg)
{
    pfp_ctx *px = arg;
    px->b_value_after = RD(px->c)->value;
    return STM_DONE;
}

static void pfp_thief(void *arg)
{
    pfp_ctx *px = arg;
    ls_wait(1);
    ts_run(tx_thief_reads_pfp, px);
    ts_run(tx_thief_reads_pfp_again, px);
    ls_set(2);
    ls_wait(3);
    ts_run(tx_thief_reads_latest, px);
    ls_set(4);
}

static void pfp_owner(void *arg)
{
    pfp_ctx *px = arg;
    ts_run(tx_victim_pfp, px);
    stm_push_root(px->n);
    shared_raw = px->n;
    stm_stats before = ts_stats();
    ts_run(tx_owner_modifies, px);
    stm_stats after = ts_stats();
    if (px->owner_aborts) {
        CHECK_EQ(px->attempts, 2);
        CHECK_EQ(px->n->value, 1);
    } else {
        CHECK_EQ(px->attempts, 1);
        /* A stolen copy turns the commit into a shared one... */
        CHECK_EQ(DELTA(after, before, commits_shared), 1);
        /* ...which outdates the thief's copy, forwarding to our version. */
        KIND(px->c, STM_KIND_PUBLIC_OUTDATED);
        node *stub = ts_forward(px->c);
        CHECK(stub != NULL, "outdated copy forwards");
        KIND(stub, STM_KIND_STUB);
        CHECK_PTR_EQ(ts_stub_target(stub), px->n);
        KIND(px->n, STM_KIND_PROTECTED);
#ifdef STM_TESTING
        CHECK(stm_test_backup_of(px->n) == NULL, "no backup after commit");
#endif
        CHECK_EQ(px->n->value, 2);
    }
    ls_set(3);
    ls_wait(4);
    px->n = stm_pop_root();
}

Test(objects, steal_young_object_being_modified)
{
    pfp_ctx px = { .old = false };
    two_threads(pfp_owner, pfp_thief, &px);
    CHECK_PTR_EQ(px.c2, px.c);
    CHECK_EQ(px.b_value_after, 2);   /* the thief then sees the new version */
}

Test(objects, steal_old_object_being_modified)
{
    pfp_ctx px = { .old = true };
    two_threads(pfp_owner, pfp_thief, &px);
    CHECK_PTR_EQ(px.c2, px.c);
    CHECK_EQ(px.b_value_after, 2);
}

Test(objects, owner_abort_after_steal_forwards_to_stolen_copy)
{
    pfp_ctx px = { .old = true, .owner_aborts = true };
    two_threads(pfp_owner, pfp_thief, &px);
    CHECK_PTR_EQ(px.c2, px.c);
    CHECK_EQ(px.b_value_after, 1);   /* nothing was committed */
}

#ifdef STM_TESTING
/* "The owner is never stopped" (DESIGN 4): while a thief holds the owner's
 * collection lock (paused at STM_POINT_STEAL_LOCKED), the owner still reads
 * public objects, allocates and commits read-only transactions; the object
 * is stolen only after the thief resumes.  (A library that took the lock
 * on those paths would deadlock here and time out.) */
typedef struct lock_ctx {
    node *n, *c;
    int fired;
    long seen;
} lock_ctx;

static void hook_pause_thief(stm_test_point p, void *arg)
{
    (void)p;
    lock_ctx *lx = arg;
    if (lx->fired++ == 0) {
        KIND(lx->n, STM_KIND_PROTECTED);   /* not copied yet */
        ls_set(2);
        ls_wait(3);
    }
}

static int tx_thief_paused(void *arg)
{
    lock_ctx *lx = arg;
    lx->c = RD(shared_raw);
    return STM_DONE;
}

static void thief_paused(void *arg)
{
    lock_ctx *lx = arg;
    ls_wait(1);
    stm_test_set_hook(STM_POINT_STEAL_LOCKED, hook_pause_thief, lx);
    ts_run(tx_thief_paused, lx);
    stm_test_set_hook(STM_POINT_STEAL_LOCKED, NULL, NULL);
    CHECK_EQ(lx->fired, 1);
    CHECK_EQ(lx->c->value, 7);
}

static int tx_make_seven(void *arg)
{
    lock_ctx *lx = arg;
    lx->n = ts_new_node(7, NULL, NULL);
    return STM_DONE;
}

static int tx_owner_works_meanwhile(void *arg)
{
    lock_ctx *lx = arg;
    lx->seen = RD(&g_node)->value;
    for (int i = 0; i < 10; i++)
        ts_new_node(i, NULL, NULL);
    return STM_DONE;
}

static void owner_not_stopped(void *arg)
{
    lock_ctx *lx = arg;
    ts_run(tx_make_seven, lx);
    stm_push_root(lx->n);
    shared_raw = lx->n;
    ls_set(1);
    ls_wait(2);                            /* the thief holds our lock */
    ts_run(tx_owner_works_meanwhile, lx);
    ts_run(tx_owner_works_meanwhile, lx);
    CHECK_EQ(lx->seen, 3);
    KIND(lx->n, STM_KIND_PROTECTED);
    ls_set(3);
    stm_pop_root();
}

Test(objects, owner_is_not_stopped_while_a_thief_holds_its_lock)
{
    ts_register_prebuilt(&g_node, 3);
    lock_ctx lx = { 0 };
    two_threads(owner_not_stopped, thief_paused, &lx);
    KIND(lx.n, STM_KIND_MOVED);
}
#endif
