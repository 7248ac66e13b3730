/* gcchurn.c -- stress program: a collector-heavy workload.
 *
 * Worker threads keep building small binary trees (each node a fresh
 * object, so the nursery fills up and minor collections run all the
 * time), drop most of them at once, and publish some into a shared table
 * of slots, replacing what was there; they also read trees other threads
 * published (stealing them out of those threads' nurseries and old
 * pages) and check them.  Every tree carries its own checksum in its
 * root: a tree read through the table must add up, in every attempt,
 * aborted ones included, and at the end every slot must hold a tree that
 * adds up.  A collection that loses, moves wrongly or frees a live object
 * shows up as a wrong sum, a wrong type id or a crash (the debug variant
 * poisons freed nursery memory; run it with a tiny nursery).
 *
 * The table is where weak references go once the library has them
 * (stm_weakref_*, issue 3): the "cache" half of the slots will then hold
 * weak references to trees that only the threads' own roots keep alive,
 * and a cleared weak reference is an expected outcome rather than an
 * error.  See the WEAKREF markers.
 *
 *   gcchurn [--threads N] [--rounds N] [--slots N] [--depth D]
 *           [--nursery BYTES] [--seed S]
 *
 * Exit status 0 only if every tree checked adds up. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stm.h>

enum { T_TREE = 21, T_TABLE = 22 };

typedef struct tree {
    stm_header hdr;
    long value;
    long sum;              /* root only: sum of all values below and here */
    struct tree *left, *right;
} tree;

typedef struct table {
    stm_header hdr;
    long n;
    tree *slot[];          /* WEAKREF: the upper half becomes weak slots */
} table;

static size_t obj_size(const void *o)
{
    if (stm_get_tid(o) == T_TREE)
        return sizeof(tree);
    if (stm_get_tid(o) == T_TABLE)
        return sizeof(table) + (size_t)((const table *)o)->n * sizeof(tree *);
    fprintf(stderr, "gcchurn: object %p has a bad type id %u\n", o, stm_get_tid(o));
    abort();
}
static void obj_trace(void *o, stm_visit_fn *visit, void *ctx)
{
    if (stm_get_tid(o) == T_TREE) {
        visit((void **)&((tree *)o)->left, ctx);
        visit((void **)&((tree *)o)->right, ctx);
    } else {
        table *t = o;
        for (long i = 0; i < t->n; i++)
            visit((void **)&t->slot[i], ctx);
    }
}

static struct {
    long threads, rounds, slots, depth, nursery;
    uint64_t seed;
} opt = { .threads = 2, .rounds = 2000, .slots = 16, .depth = 5, .nursery = 65536, .seed = 1 };

static void *g_table;
static atomic_long bad_sums, trees_checked;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Builds a tree of depth d; every allocation may collect, so partial
 * results live on the shadow stack.  Returns the root (not pushed). */
static tree *build(long depth, long *value, long *sum)
{
    tree *l = NULL, *r = NULL;
    if (depth > 1) {
        l = build(depth - 1, value, sum);
        stm_push_root(l);
        r = build(depth - 1, value, sum);
        stm_push_root(r);
    }
    tree *n = stm_allocate(sizeof(tree), T_TREE);
    if (depth > 1) {
        r = stm_pop_root();
        l = stm_pop_root();
    }
    n->value = ++*value;
    *sum += n->value;
    n->left = l;
    n->right = r;
    return n;
}

static long add_up(const tree *p, long limit, long *count)
{
    if (!p || *count > limit)
        return 0;
    const tree *t = stm_read(p);
    if (stm_get_tid(t) != T_TREE) {
        *count = limit + 1;   /* a freed or overwritten object */
        return 0;
    }
    ++*count;
    return t->value + add_up(t->left, limit, count) + add_up(t->right, limit, count);
}

/* Returns false if the tree at p does not add up to its recorded sum. */
static bool tree_ok(const tree *p)
{
    if (!p)
        return true;
    long count = 0, nodes = (1L << opt.depth) - 1;
    long sum = add_up(p, nodes, &count);
    return count == nodes && sum == ((const tree *)stm_read(p))->sum;
}

typedef struct worker {
    int index;
    uint64_t rng;
    long value;
    long slot, build_only;
    bool ok;
} worker;

static int tx_round(void *arg)
{
    worker *w = arg;
    /* Garbage first: a few trees dropped at once. */
    for (long i = 0; i < w->build_only; i++) {
        long sum = 0;
        (void)build(opt.depth, &w->value, &sum);
    }
    long sum = 0;
    tree *t = build(opt.depth, &w->value, &sum);
    t->sum = sum;
    /* Check what the slot held, then replace it.  A wrong sum is counted
     * in every attempt: opacity says even a doomed one sees whole trees. */
    table *tab = stm_read(g_table);
    w->ok = tree_ok(tab->slot[w->slot]);
    if (!w->ok)
        atomic_fetch_add(&bad_sums, 1);
    atomic_fetch_add(&trees_checked, 1);
    ((table *)stm_write(g_table))->slot[w->slot] = t;
    return STM_DONE;
}

static int tx_check_all(void *arg)
{
    long *bad = arg;
    *bad = 0;
    const table *tab = stm_read(g_table);
    for (long i = 0; i < tab->n; i++)
        if (!tree_ok(tab->slot[i]))
            ++*bad;
    return STM_DONE;
}

static void *work(void *arg)
{
    worker *w = arg;
    if (stm_thread_attach() != STM_OK)
        exit(2);
    for (long r = 0; r < opt.rounds; r++) {
        uint64_t x = next_rand(&w->rng);
        w->slot = (long)(x % (uint64_t)opt.slots);
        w->build_only = (long)((x >> 16) % 4);
        if (stm_run(tx_round, w) != STM_OK) {
            fprintf(stderr, "gcchurn: stm_run failed\n");
            exit(1);
        }
        /* WEAKREF: here a thread will also look up a weakly held tree and
         * check it adds up when the reference has not been cleared. */
    }
    stm_thread_detach();
    return NULL;
}

static long parse_long(const char *name, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "gcchurn: %s: expected an integer >= %ld, got '%s'\n", name, min, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "gcchurn: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--threads"))
            opt.threads = parse_long(a, v, 1);
        else if (!strcmp(a, "--rounds"))
            opt.rounds = parse_long(a, v, 0);
        else if (!strcmp(a, "--slots"))
            opt.slots = parse_long(a, v, 1);
        else if (!strcmp(a, "--depth"))
            opt.depth = parse_long(a, v, 1);
        else if (!strcmp(a, "--nursery"))
            opt.nursery = parse_long(a, v, 256);
        else if (!strcmp(a, "--seed"))
            opt.seed = (uint64_t)parse_long(a, v, 0);
        else {
            fprintf(stderr, "gcchurn: unknown option %s\n", a);
            return 2;
        }
    }
    if (opt.depth > 20) {
        fprintf(stderr, "gcchurn: --depth at most 20\n");
        return 2;
    }
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    cfg.nursery_size = (size_t)opt.nursery;
    if (stm_init(&cfg) != STM_OK || stm_thread_attach() != STM_OK)
        return 2;
    stm_begin_inevitable();
    table *tab = stm_allocate(sizeof(table) + (size_t)opt.slots * sizeof(tree *), T_TABLE);
    tab->n = opt.slots;
    stm_commit();
    g_table = stm_publish(tab);
    if (!g_table || stm_register_global_root(&g_table) != STM_OK)
        return 2;

    worker *ws = calloc((size_t)opt.threads, sizeof *ws);
    pthread_t *th = calloc((size_t)opt.threads, sizeof *th);
    for (long t = 0; t < opt.threads; t++) {
        ws[t].index = (int)t;
        ws[t].rng = opt.seed * 104729u + (uint64_t)t;
        ws[t].value = t << 40;   /* distinct values per thread */
        pthread_create(&th[t], NULL, work, &ws[t]);
    }
    for (long t = 0; t < opt.threads; t++)
        pthread_join(th[t], NULL);
    long bad = 0;
    if (stm_run(tx_check_all, &bad) != STM_OK)
        return 1;
    long in_flight = atomic_load(&bad_sums);
    stm_stats st = { .size = sizeof st };
    stm_get_stats(&st);
    printf("gcchurn: %ld threads x %ld rounds, trees of %ld nodes, %ld slots: %ld trees "
           "checked in transactions, %ld bad; %ld bad at the end; %" PRIu64
           " minor collections, %" PRIu64 " bytes allocated, %" PRIu64 " steals: %s\n",
           opt.threads, opt.rounds, (1L << opt.depth) - 1, opt.slots,
           atomic_load(&trees_checked), in_flight, bad, st.minor_collections,
           st.bytes_allocated, st.steals, in_flight || bad ? "FAILED" : "OK");
    free(ws);
    free(th);
    stm_thread_detach();
    return in_flight || bad ? 1 : 0;
}
