/* intset.c -- stress program: a concurrent sorted linked list or hash set
 * of integers with inserts, deletes and lookups (after TinySTM's intset).
 *
 * The set is one published header object holding `buckets` sorted singly
 * linked lists (1 for --structure list, 64 for hash).  Thread t inserts
 * and deletes only keys k with k % threads == t, and looks up any key, so
 * each thread knows exactly which of its keys must be present: it keeps a
 * private shadow of them, updated after each commit from what the
 * committed attempt did.  Checker threads walk the whole set inside
 * read-only transactions and count every inconsistency they see: a list
 * out of order, a key in the wrong bucket, a cycle (a walk longer than the
 * key range), which opacity forbids even in attempts that later abort.
 *
 * At the end: every bucket sorted without duplicates, every key in its
 * bucket, the set size equal to the initial size plus the sum of each
 * thread's net inserts, each thread's keys exactly its shadow, and zero
 * inconsistent walks.
 *
 *   intset [--structure list|hash] [--threads N] [--ops N] [--range N]
 *          [--checkers N] [--nursery BYTES] [--seed S]
 *
 * Exit status 0 only if every check passes. */
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

enum { T_NODE = 1, T_SET = 2 };

typedef struct node {
    stm_header hdr;
    long key;
    struct node *next;
} node;

typedef struct set {
    stm_header hdr;
    long nbuckets;
    node *buckets[];
} set;

static size_t obj_size(const void *o)
{
    if (stm_get_tid(o) == T_NODE)
        return sizeof(node);
    return sizeof(set) + (size_t)((const set *)o)->nbuckets * sizeof(node *);
}
static void obj_trace(void *o, stm_visit_fn *visit, void *ctx)
{
    if (stm_get_tid(o) == T_NODE) {
        visit((void **)&((node *)o)->next, ctx);
    } else {
        set *s = o;
        for (long i = 0; i < s->nbuckets; i++)
            visit((void **)&s->buckets[i], ctx);
    }
}

static struct {
    long threads, ops, range, checkers, nursery, buckets;
    uint64_t seed;
} opt = { .threads = 2, .ops = 100000, .range = 256, .checkers = 1, .nursery = 0,
          .buckets = 1, .seed = 1 };

static void *g_set;                 /* a registered global root */
static atomic_bool writers_done;
static atomic_long inconsistent;    /* walks that saw an inconsistent set */
static atomic_long walks;

static long bucket_of(long key) { return key % opt.buckets; }

/* ---- operations (transaction functions) ---------------------------------- */

typedef struct op {
    long key;
    node *fresh;       /* allocated at the start of the attempt (insert) */
    bool result;       /* of the committed attempt */
} op;

/* Finds the last node with key < k in bucket b (NULL: the bucket head). */
static node *find_prev(set *s, long b, long key, node **cur_out)
{
    node *prev = NULL;
    node *cur = ((set *)stm_read(s))->buckets[b];
    while (cur) {
        const node *c = stm_read(cur);
        if (c->key >= key)
            break;
        prev = cur;
        cur = c->next;
    }
    *cur_out = cur;
    return prev;
}

static int tx_insert(void *arg)
{
    op *o = arg;
    /* Allocate first: nothing is held across the possible collection. */
    node *n = stm_allocate(sizeof(node), T_NODE);
    n->key = o->key;
    set *s = g_set;
    long b = bucket_of(o->key);
    node *cur;
    node *prev = find_prev(s, b, o->key, &cur);
    if (cur && ((const node *)stm_read(cur))->key == o->key) {
        o->result = false;
        return STM_DONE;
    }
    n->next = cur;
    if (prev)
        ((node *)stm_write(prev))->next = n;
    else
        ((set *)stm_write(s))->buckets[b] = n;
    o->result = true;
    return STM_DONE;
}

static int tx_delete(void *arg)
{
    op *o = arg;
    set *s = g_set;
    long b = bucket_of(o->key);
    node *cur;
    node *prev = find_prev(s, b, o->key, &cur);
    if (!cur || ((const node *)stm_read(cur))->key != o->key) {
        o->result = false;
        return STM_DONE;
    }
    node *next = ((const node *)stm_read(cur))->next;
    if (prev)
        ((node *)stm_write(prev))->next = next;
    else
        ((set *)stm_write(s))->buckets[b] = next;
    o->result = true;
    return STM_DONE;
}

static int tx_contains(void *arg)
{
    op *o = arg;
    node *cur;
    (void)find_prev(g_set, bucket_of(o->key), o->key, &cur);
    o->result = cur && ((const node *)stm_read(cur))->key == o->key;
    return STM_DONE;
}

/* Walks everything; counts problems (each attempt, aborted or not). */
typedef struct walk {
    long size;
    long bad;
    char why[120];
} walk;

static int tx_walk(void *arg)
{
    walk *w = arg;
    w->size = 0;
    w->bad = 0;
    const set *s = stm_read(g_set);
    for (long b = 0; b < s->nbuckets; b++) {
        long last = -1, steps = 0;
        for (node *p = s->buckets[b]; p; p = ((const node *)stm_read(p))->next) {
            const node *n = stm_read(p);
            if (++steps > opt.range) {
                snprintf(w->why, sizeof w->why, "bucket %ld: a cycle or more nodes than keys", b);
                w->bad++;
                break;
            }
            if (n->key <= last || n->key < 0 || n->key >= opt.range || bucket_of(n->key) != b) {
                snprintf(w->why, sizeof w->why, "bucket %ld: key %ld after %ld", b, n->key, last);
                w->bad++;
            }
            last = n->key;
            w->size++;
        }
    }
    if (w->bad)
        atomic_fetch_add(&inconsistent, 1);
    atomic_fetch_add(&walks, 1);
    return STM_DONE;
}

/* ---- threads ---------------------------------------------------------------- */

typedef struct worker {
    int index;
    uint64_t rng;
    long net;              /* committed inserts - deletes of own keys */
    bool *mine;            /* shadow: is own key k present? */
    pthread_t th;
} worker;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void run_or_die(stm_tx_fn *fn, void *arg)
{
    int rc = stm_run(fn, arg);
    if (rc != STM_OK) {
        fprintf(stderr, "intset: stm_run returned %d\n", rc);
        exit(1);
    }
}

static void *writer(void *arg)
{
    worker *w = arg;
    if (stm_thread_attach() != STM_OK)
        exit(2);
    for (long i = 0; i < opt.ops; i++) {
        uint64_t r = next_rand(&w->rng);
        long k = (long)((r >> 8) % (uint64_t)opt.range);
        op o = { .key = k };
        switch (r % 4) {
        case 0:
        case 1: {
            /* Own keys only, so the shadow is exact. */
            k -= k % opt.threads;
            k += w->index;
            if (k >= opt.range)
                k = w->index;
            o.key = k;
            bool ins = r % 4 == 0;
            run_or_die(ins ? tx_insert : tx_delete, &o);
            if (o.result != (ins ? !w->mine[k] : w->mine[k])) {
                fprintf(stderr, "intset: thread %d: %s(%ld) returned %d, own shadow says %d\n",
                        w->index, ins ? "insert" : "delete", k, o.result, w->mine[k]);
                exit(1);
            }
            if (o.result) {
                w->mine[k] = ins;
                w->net += ins ? 1 : -1;
            }
            break;
        }
        default:
            run_or_die(tx_contains, &o);
            if (k % opt.threads == w->index && o.result != w->mine[k]) {
                fprintf(stderr, "intset: thread %d: contains(%ld) = %d, own shadow says %d\n",
                        w->index, k, o.result, w->mine[k]);
                exit(1);
            }
        }
    }
    stm_thread_detach();
    return NULL;
}

static void *checker(void *arg)
{
    (void)arg;
    if (stm_thread_attach() != STM_OK)
        exit(2);
    walk w;
    while (!atomic_load(&writers_done))
        run_or_die(tx_walk, &w);
    stm_thread_detach();
    return NULL;
}

static long parse_long(const char *name, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "intset: %s: expected an integer >= %ld, got '%s'\n", name, min, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "intset: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--structure")) {
            if (!strcmp(v, "list"))
                opt.buckets = 1;
            else if (!strcmp(v, "hash"))
                opt.buckets = 64;
            else {
                fprintf(stderr, "intset: --structure list|hash\n");
                return 2;
            }
        } else if (!strcmp(a, "--threads"))
            opt.threads = parse_long(a, v, 1);
        else if (!strcmp(a, "--ops"))
            opt.ops = parse_long(a, v, 0);
        else if (!strcmp(a, "--range"))
            opt.range = parse_long(a, v, 2);
        else if (!strcmp(a, "--checkers"))
            opt.checkers = parse_long(a, v, 0);
        else if (!strcmp(a, "--nursery"))
            opt.nursery = parse_long(a, v, 256);
        else if (!strcmp(a, "--seed"))
            opt.seed = (uint64_t)parse_long(a, v, 0);
        else {
            fprintf(stderr, "intset: unknown option %s\n", a);
            return 2;
        }
    }
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    if (opt.nursery)
        cfg.nursery_size = (size_t)opt.nursery;
    if (stm_init(&cfg) != STM_OK || stm_thread_attach() != STM_OK)
        return 2;

    /* The set, with every even key of the range to start with (each
     * thread's shadow starts from the keys it owns). */
    worker *ws = calloc((size_t)opt.threads, sizeof *ws);
    for (long t = 0; t < opt.threads; t++) {
        ws[t].index = (int)t;
        ws[t].rng = opt.seed * 7919u + (uint64_t)t;
        ws[t].mine = calloc((size_t)opt.range, sizeof(bool));
    }
    long initial = 0;
    stm_begin_inevitable();
    set *s = stm_allocate(sizeof(set) + (size_t)opt.buckets * sizeof(node *), T_SET);
    s->nbuckets = opt.buckets;
    stm_push_root(s);
    for (long k = opt.range - 2 + (opt.range % 2); k >= 0; k -= 2) {
        node *n = stm_allocate(sizeof(node), T_NODE);
        s = stm_pop_root();
        s = stm_write(s);
        n->key = k;
        n->next = s->buckets[bucket_of(k)];
        s->buckets[bucket_of(k)] = n;
        stm_push_root(s);
        ws[k % opt.threads].mine[k] = true;
        initial++;
    }
    s = stm_pop_root();
    stm_commit();
    g_set = stm_publish(s);
    if (!g_set || stm_register_global_root(&g_set) != STM_OK)
        return 2;

    pthread_t *cs = calloc((size_t)opt.checkers + 1, sizeof *cs);
    for (long c = 0; c < opt.checkers; c++)
        pthread_create(&cs[c], NULL, checker, NULL);
    for (long t = 0; t < opt.threads; t++)
        pthread_create(&ws[t].th, NULL, writer, &ws[t]);
    long net = 0;
    for (long t = 0; t < opt.threads; t++) {
        pthread_join(ws[t].th, NULL);
        net += ws[t].net;
    }
    atomic_store(&writers_done, true);
    for (long c = 0; c < opt.checkers; c++)
        pthread_join(cs[c], NULL);

    /* Final checks, in one more walk and key by key. */
    walk w;
    run_or_die(tx_walk, &w);
    int failures = 0;
    if (w.bad) {
        fprintf(stderr, "intset: final set is inconsistent: %s\n", w.why);
        failures++;
    }
    if (w.size != initial + net) {
        fprintf(stderr, "intset: size %ld, expected %ld initial + %ld net inserts\n", w.size,
                initial, net);
        failures++;
    }
    for (long k = 0; k < opt.range; k++) {
        op o = { .key = k };
        run_or_die(tx_contains, &o);
        if (o.result != ws[k % opt.threads].mine[k]) {
            fprintf(stderr, "intset: key %ld present=%d, its owner thread says %d\n", k, o.result,
                    ws[k % opt.threads].mine[k]);
            failures++;
        }
    }
    long bad_walks = atomic_load(&inconsistent);
    if (bad_walks) {
        fprintf(stderr, "intset: %ld walks saw an inconsistent set (opacity)\n", bad_walks);
        failures++;
    }
    stm_stats st = { .size = sizeof st };
    stm_get_stats(&st);
    printf("intset: %s, %ld threads x %ld ops, range %ld: size %ld (initial %ld, net %+ld), "
           "%ld walks by %ld checkers all consistent; %" PRIu64 " commits, %" PRIu64
           " aborts, %" PRIu64 " minor collections: %s\n",
           opt.buckets == 1 ? "sorted list" : "hash set", opt.threads, opt.ops, opt.range,
           w.size, initial, net, atomic_load(&walks), opt.checkers, st.commits, st.aborts,
           st.minor_collections, failures ? "FAILED" : "OK");
    for (long t = 0; t < opt.threads; t++)
        free(ws[t].mine);
    free(ws);
    free(cs);
    stm_thread_detach();
    return failures ? 1 : 0;
}
