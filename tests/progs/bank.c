/* bank.c -- stress program: concurrent transfers between accounts.
 *
 * The main thread creates an array of accounts in one transaction and makes
 * it shareable (stm_publish, then a registered global root).  Transfer
 * threads move random amounts between two distinct random accounts; checker
 * threads keep summing all balances in read-only transactions.  Every
 * attempt of a summing transaction, including attempts that abort later,
 * must see the exact initial total (opacity): a mismatch is counted from
 * inside the transaction function.  At the end the total and every single
 * balance are compared with what the committed transfers imply.
 *
 *   bank [--threads N] [--transfers N] [--accounts N] [--checkers N]
 *        [--seed S] [--check-every K] [--alloc-every K] [--nursery BYTES]
 *        [--share MODE] [--json]
 *
 * Exit status 0 only if the total is preserved, every balance matches the
 * committed transfers and no transaction ever saw an inconsistent total. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stm.h>

/* ---- objects ------------------------------------------------------------ */

enum { T_ACCOUNT = 1, T_ARRAY = 2, T_RECEIPT = 3 };

typedef struct account {
    stm_header hdr;
    long balance;
} account;

typedef struct account_array {
    stm_header hdr;
    long count;
    account *items[];
} account_array;

/* Garbage allocated by some transfers, so that minor collections run while
 * other threads steal from the nursery. */
typedef struct receipt {
    stm_header hdr;
    long from, to, amount;
} receipt;

static size_t obj_size(const void *obj)
{
    switch (stm_get_tid(obj)) {
    case T_ACCOUNT:
        return sizeof(account);
    case T_ARRAY:
        return offsetof(account_array, items) +
               (size_t)((const account_array *)obj)->count * sizeof(account *);
    case T_RECEIPT:
        return sizeof(receipt);
    }
    fprintf(stderr, "bank: object %p has unknown type id %u\n", obj, stm_get_tid(obj));
    abort();
}

static void obj_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    if (stm_get_tid(obj) == T_ARRAY) {
        account_array *a = obj;
        for (long i = 0; i < a->count; i++)
            visit((void **)&a->items[i], ctx);
    }
}

/* ---- options ------------------------------------------------------------ */

static struct {
    long threads, transfers, accounts, checkers, check_every, alloc_every, nursery;
    uint64_t seed;
    bool publish_each;   /* --share publish: publish every account first */
    bool json;
} opt = {
    .threads = 2, .transfers = 1000000, .accounts = 64, .checkers = 1,
    .check_every = 100, .alloc_every = 2, .seed = 42,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bank [options]\n"
            "  --threads N      transfer threads (default 2)\n"
            "  --transfers N    transfers in total, over all threads (default 1000000)\n"
            "  --accounts N     accounts, at least 2 (default 64)\n"
            "  --checkers N     threads running read-only summing transactions (default 1)\n"
            "  --seed S         random seed (default 42)\n"
            "  --check-every K  every Kth transfer also sums all balances first\n"
            "                   (default 100, 0: never)\n"
            "  --alloc-every K  every Kth transfer allocates a receipt object, which\n"
            "                   makes minor collections happen (default 2, 0: never)\n"
            "  --nursery BYTES  nursery size per thread (default: the library's);\n"
            "                   a small one makes minor collections frequent\n"
            "  --share MODE     steal: publish the array only, threads steal the main\n"
            "                   thread's accounts through stubs (default);\n"
            "                   publish: publish every account before the array\n"
            "  --json           print one JSON object instead of the text summary\n");
}

static long parse_long(const char *name, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "bank: %s: expected an integer >= %ld, got '%s'\n", name, min, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            opt.json = true;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bank: unknown option or missing value: %s\n", a);
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--threads"))
            opt.threads = parse_long(a, v, 1);
        else if (!strcmp(a, "--transfers"))
            opt.transfers = parse_long(a, v, 0);
        else if (!strcmp(a, "--accounts"))
            opt.accounts = parse_long(a, v, 2);
        else if (!strcmp(a, "--checkers"))
            opt.checkers = parse_long(a, v, 0);
        else if (!strcmp(a, "--check-every"))
            opt.check_every = parse_long(a, v, 0);
        else if (!strcmp(a, "--alloc-every"))
            opt.alloc_every = parse_long(a, v, 0);
        else if (!strcmp(a, "--nursery"))
            opt.nursery = parse_long(a, v, 0);
        else if (!strcmp(a, "--seed"))
            opt.seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--share")) {
            if (!strcmp(v, "steal"))
                opt.publish_each = false;
            else if (!strcmp(v, "publish"))
                opt.publish_each = true;
            else {
                fprintf(stderr, "bank: --share: expected steal or publish, got '%s'\n", v);
                exit(2);
            }
        } else {
            fprintf(stderr, "bank: unknown option: %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (opt.threads > 1000 || opt.checkers > 1000 || opt.accounts > 1000000) {
        fprintf(stderr, "bank: too many threads or accounts\n");
        exit(2);
    }
}

/* ---- random numbers (xorshift64*, one generator per thread) ------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint64_t rng_seed(uint64_t stream)
{
    uint64_t s = splitmix64(opt.seed ^ splitmix64(stream));
    return s ? s : 1;
}

/* ---- shared state ------------------------------------------------------- */

/* The public array; set once by the main thread before any other thread
 * starts (pthread_create orders it), never changed afterwards. */
static void *g_bank;
static long g_total;                    /* the sum that must never change */
static long *g_initial;                 /* initial balance of each account */

static atomic_long g_violations;        /* inconsistent totals seen in transactions */
static atomic_long g_first_bad_total;   /* the first of them, for the report */
static atomic_bool g_transfers_done;    /* checkers stop once set */

static void report_violation(long seen)
{
    long zero = 0;
    if (atomic_fetch_add(&g_violations, 1) == 0)
        atomic_compare_exchange_strong(&g_first_bad_total, &zero, seen);
}

/* Sums every balance as seen by the running transaction.  Must be called
 * inside one; counts a violation (before the transaction ends) if the sum
 * is not the constant total. */
static long sum_and_check(const account_array *a)
{
    long sum = 0;
    for (long i = 0; i < a->count; i++) {
        const account *acc = stm_read(a->items[i]);
        sum += acc->balance;
    }
    if (sum != g_total)
        report_violation(sum);
    return sum;
}

/* ---- set-up ------------------------------------------------------------- */

typedef struct setup_ctx {
    account_array *result;   /* set by the committing attempt */
} setup_ctx;

static int setup_tx(void *arg)
{
    setup_ctx *cx = arg;
    long n = opt.accounts;
    size_t size = offsetof(account_array, items) + (size_t)n * sizeof(account *);
    account_array *a = stm_allocate(size, T_ARRAY);
    a->count = n;
    for (long i = 0; i < n; i++) {
        /* The allocation may collect: keep the array in a root and use the
         * (possibly moved) pointer afterwards. */
        stm_push_root(a);
        account *acc = stm_allocate(sizeof(account), T_ACCOUNT);
        a = stm_pop_root();
        acc->balance = g_initial[i];
        /* stm_write, not a plain store: if a collection made the array
         * old, this records it in the remembered set. */
        a = stm_write(a);
        a->items[i] = acc;
    }
    cx->result = a;
    return STM_DONE;
}

/* Builds the accounts and publishes them; returns the public array. */
static void *make_bank(void)
{
    setup_ctx cx = { NULL };
    if (stm_run(setup_tx, &cx) != STM_OK) {
        fprintf(stderr, "bank: the set-up transaction ran out of memory\n");
        exit(1);
    }
    /* Outside any transaction nothing collects: cx.result stays valid. */
    account_array *a = cx.result;
    if (opt.publish_each) {
        /* The array's fields now lead to forwarders, which stm_publish of
         * the array replaces by the public copies. */
        for (long i = 0; i < a->count; i++) {
            if (!stm_publish(a->items[i])) {
                fprintf(stderr, "bank: stm_publish of account %ld failed\n", i);
                exit(1);
            }
        }
    }
    void *pub = stm_publish(a);
    if (!pub) {
        fprintf(stderr, "bank: stm_publish of the account array failed\n");
        exit(1);
    }
    return pub;
}

/* ---- transfer threads --------------------------------------------------- */

typedef struct worker {
    pthread_t tid;
    long index;
    long todo;
    uint64_t rng;
    long *delta;             /* net committed change of each account */
    /* statistics */
    long transfers, checks_committed, check_attempts, attempts;
    /* the current transfer, chosen outside the transaction */
    long from, to, amount;
    bool check, alloc;
} worker;

static int transfer_tx(void *arg)
{
    worker *w = arg;
    w->attempts++;
    account_array *a = stm_read(g_bank);
    if (w->check) {
        w->check_attempts++;
        sum_and_check(a);
    }
    if (w->alloc) {
        stm_push_root(a);
        receipt *r = stm_allocate(sizeof(receipt), T_RECEIPT);
        a = stm_pop_root();
        /* After a possible collection every earlier stm_read result is
         * stale: resolve the array again. */
        a = stm_read(a);
        r->from = w->from;
        r->to = w->to;
        r->amount = w->amount;
    }
    account *src = stm_write(a->items[w->from]);
    src->balance -= w->amount;
    account *dst = stm_write(a->items[w->to]);
    dst->balance += w->amount;
    return STM_DONE;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (stm_thread_attach() != STM_OK) {
        fprintf(stderr, "bank: stm_thread_attach failed in worker %ld\n", w->index);
        exit(1);
    }
    long n = opt.accounts;
    for (long k = 0; k < w->todo; k++) {
        w->from = (long)(xorshift(&w->rng) % (uint64_t)n);
        w->to = (long)(xorshift(&w->rng) % (uint64_t)(n - 1));
        if (w->to >= w->from)
            w->to++;                      /* distinct from `from` */
        w->amount = (long)(xorshift(&w->rng) % 1000) + 1;
        w->check = opt.check_every && k % opt.check_every == 0;
        w->alloc = opt.alloc_every && k % opt.alloc_every == 0;
        if (stm_run(transfer_tx, w) != STM_OK) {
            fprintf(stderr, "bank: a transfer ran out of memory\n");
            exit(1);
        }
        /* Committed exactly once. */
        w->delta[w->from] -= w->amount;
        w->delta[w->to] += w->amount;
        w->transfers++;
        if (w->check)
            w->checks_committed++;
    }
    if (stm_thread_detach() != STM_OK) {
        fprintf(stderr, "bank: stm_thread_detach failed in worker %ld\n", w->index);
        exit(1);
    }
    return NULL;
}

/* ---- checker threads ---------------------------------------------------- */

typedef struct checker {
    pthread_t tid;
    long index;
    long attempts, committed;
} checker;

static int check_tx(void *arg)
{
    checker *c = arg;
    c->attempts++;
    sum_and_check(stm_read(g_bank));
    return STM_DONE;
}

static void *checker_main(void *arg)
{
    checker *c = arg;
    if (stm_thread_attach() != STM_OK) {
        fprintf(stderr, "bank: stm_thread_attach failed in checker %ld\n", c->index);
        exit(1);
    }
    do {
        if (stm_run(check_tx, c) != STM_OK) {
            fprintf(stderr, "bank: a check ran out of memory\n");
            exit(1);
        }
        c->committed++;
    } while (!atomic_load(&g_transfers_done));
    if (stm_thread_detach() != STM_OK) {
        fprintf(stderr, "bank: stm_thread_detach failed in checker %ld\n", c->index);
        exit(1);
    }
    return NULL;
}

/* ---- final check -------------------------------------------------------- */

typedef struct final_ctx {
    long total;
    long *balances;
} final_ctx;

static int final_tx(void *arg)
{
    final_ctx *f = arg;
    const account_array *a = stm_read(g_bank);
    f->total = 0;
    for (long i = 0; i < a->count; i++) {
        const account *acc = stm_read(a->items[i]);
        f->balances[i] = acc->balance;
        f->total += acc->balance;
    }
    return STM_DONE;
}

/* ---- main --------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "bank: out of memory\n");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    long n = opt.accounts;

    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = obj_size;
    cfg.trace = obj_trace;
    if (opt.nursery)
        cfg.nursery_size = (size_t)opt.nursery;
    if (stm_init(&cfg) != STM_OK || stm_thread_attach() != STM_OK) {
        fprintf(stderr, "bank: library initialisation failed\n");
        return 1;
    }

    /* Initial balances from the seed; the total is what must be kept. */
    g_initial = xcalloc((size_t)n, sizeof(long));
    uint64_t rng = rng_seed(0);
    for (long i = 0; i < n; i++) {
        g_initial[i] = (long)(xorshift(&rng) % 10000);
        g_total += g_initial[i];
    }

    if (stm_register_global_root(&g_bank) != STM_OK) {
        fprintf(stderr, "bank: stm_register_global_root failed\n");
        return 1;
    }
    g_bank = make_bank();

    worker *workers = xcalloc((size_t)opt.threads, sizeof(worker));
    checker *checkers = xcalloc((size_t)opt.checkers + 1, sizeof(checker));
    double t0 = now_seconds();
    for (long i = 0; i < opt.threads; i++) {
        worker *w = &workers[i];
        w->index = i;
        w->todo = opt.transfers / opt.threads + (i < opt.transfers % opt.threads);
        w->rng = rng_seed((uint64_t)i + 1);
        w->delta = xcalloc((size_t)n, sizeof(long));
        if (pthread_create(&w->tid, NULL, worker_main, w)) {
            fprintf(stderr, "bank: pthread_create failed\n");
            return 1;
        }
    }
    for (long i = 0; i < opt.checkers; i++) {
        checkers[i].index = i;
        if (pthread_create(&checkers[i].tid, NULL, checker_main, &checkers[i])) {
            fprintf(stderr, "bank: pthread_create failed\n");
            return 1;
        }
    }
    for (long i = 0; i < opt.threads; i++)
        pthread_join(workers[i].tid, NULL);
    double elapsed = now_seconds() - t0;
    atomic_store(&g_transfers_done, true);
    for (long i = 0; i < opt.checkers; i++)
        pthread_join(checkers[i].tid, NULL);

    /* Final state, read in a transaction of the main thread, against the
     * initial balances plus every committed transfer. */
    final_ctx fin = { 0, xcalloc((size_t)n, sizeof(long)) };
    if (stm_run(final_tx, &fin) != STM_OK) {
        fprintf(stderr, "bank: the final check ran out of memory\n");
        return 1;
    }
    long mismatched = 0, first_bad = -1;
    for (long i = 0; i < n; i++) {
        long expect = g_initial[i];
        for (long t = 0; t < opt.threads; t++)
            expect += workers[t].delta[i];
        if (fin.balances[i] != expect && mismatched++ == 0)
            first_bad = i;
    }

    long transfers = 0, attempts = 0, tchecks = 0, tcheck_attempts = 0;
    for (long t = 0; t < opt.threads; t++) {
        transfers += workers[t].transfers;
        attempts += workers[t].attempts;
        tchecks += workers[t].checks_committed;
        tcheck_attempts += workers[t].check_attempts;
    }
    long cchecks = 0, ccheck_attempts = 0;
    for (long i = 0; i < opt.checkers; i++) {
        cchecks += checkers[i].committed;
        ccheck_attempts += checkers[i].attempts;
    }
    long violations = atomic_load(&g_violations);
    bool total_ok = fin.total == g_total;
    bool ok = total_ok && mismatched == 0 && violations == 0 && transfers == opt.transfers;

    stm_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    stm_get_stats(&st);

    if (opt.json) {
        printf("{\"program\":\"bank\",\"ok\":%s,\"threads\":%ld,\"checkers\":%ld,"
               "\"accounts\":%ld,\"seed\":%" PRIu64 ",\"share\":\"%s\","
               "\"transfers\":%ld,\"elapsed_s\":%.6f,\"transfers_per_s\":%.0f,"
               "\"initial_total\":%ld,\"final_total\":%ld,\"mismatched_accounts\":%ld,"
               "\"transfer_attempts\":%ld,"
               "\"checks\":{\"in_transfers\":%ld,\"in_transfers_attempts\":%ld,"
               "\"checkers\":%ld,\"checkers_attempts\":%ld},"
               "\"violations\":%ld,\"stats\":{",
               ok ? "true" : "false", opt.threads, opt.checkers, n, opt.seed,
               opt.publish_each ? "publish" : "steal", transfers, elapsed,
               elapsed > 0 ? (double)transfers / elapsed : 0.0, g_total, fin.total,
               mismatched, attempts, tchecks, tcheck_attempts, cchecks, ccheck_attempts,
               violations);
        const uint64_t *fields = &st.commits;
        for (unsigned i = 0; stm_stats_field_name(i); i++)
            printf("%s\"%s\":%" PRIu64, i ? "," : "", stm_stats_field_name(i), fields[i]);
        printf("},\"aborts_by_reason\":{");
        for (unsigned r = 0; r < STM_ABORT_REASON_COUNT; r++)
            printf("%s\"%s\":%" PRIu64, r ? "," : "", stm_abort_reason_name(r),
                   st.aborts_by_reason[r]);
        printf("}}\n");
    } else {
        printf("bank: %ld transfer threads, %ld checker threads, %ld accounts, seed %" PRIu64
               ", share=%s\n",
               opt.threads, opt.checkers, n, opt.seed, opt.publish_each ? "publish" : "steal");
        printf("  transfers:        %ld in %.3f s (%.0f/s), %ld attempts\n", transfers, elapsed,
               elapsed > 0 ? (double)transfers / elapsed : 0.0, attempts);
        printf("  commits:          %" PRIu64 " (%" PRIu64 " read-only, %" PRIu64
               " private, %" PRIu64 " shared), %" PRIu64 " inevitable\n",
               st.commits, st.commits_readonly, st.commits_private, st.commits_shared,
               st.inevitable);
        printf("  aborts:           %" PRIu64 "\n", st.aborts);
        for (unsigned r = 0; r < STM_ABORT_REASON_COUNT; r++)
            if (st.aborts_by_reason[r])
                printf("    %-20s %" PRIu64 "\n", stm_abort_reason_name(r),
                       st.aborts_by_reason[r]);
        printf("  steals:           %" PRIu64 ", stubs %" PRIu64 ", minor collections %" PRIu64
               "\n",
               st.steals, st.stubs_created, st.minor_collections);
        printf("  in-flight checks: %ld attempts in transfers (%ld committed), "
               "%ld attempts in checkers (%ld committed)\n",
               tcheck_attempts, tchecks, ccheck_attempts, cchecks);
        printf("  violations:       %ld\n", violations);
        printf("  total:            initial %ld, final %ld\n", g_total, fin.total);
    }

    for (long t = 0; t < opt.threads; t++)
        free(workers[t].delta);
    free(workers);
    free(checkers);
    free(fin.balances);
    free(g_initial);
    stm_thread_detach();

    if (!ok) {
        if (violations)
            fprintf(stderr, "bank: FAILED: %ld transaction attempt(s) saw an inconsistent "
                    "total (first: %ld, expected %ld)\n",
                    violations, atomic_load(&g_first_bad_total), g_total);
        if (!total_ok)
            fprintf(stderr, "bank: FAILED: total not preserved: initial %ld, final %ld\n",
                    g_total, fin.total);
        if (mismatched)
            fprintf(stderr, "bank: FAILED: %ld account(s) differ from the committed transfers "
                    "(first: account %ld)\n", mismatched, first_bad);
        if (transfers != opt.transfers)
            fprintf(stderr, "bank: FAILED: %ld transfers committed, %ld expected\n",
                    transfers, opt.transfers);
        return 1;
    }
    if (!opt.json)
        printf("bank: OK\n");
    return 0;
}
