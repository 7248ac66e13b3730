/* test_support.c -- see test_support.h. */
#include "test_support.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- object model ---------------------------------------------------- */

size_t ts_object_size(const void *obj)
{
    const stm_header *h = obj;
    switch (h->tid) {
    case T_NODE:
        return sizeof(node);
    case T_ARRAY:
        return ARRAY_SIZE(((const array *)obj)->n);
    default:
        fprintf(stderr, "ts_object_size: unknown tid %u at %p\n", h->tid, obj);
        abort();
    }
}

void ts_trace(void *obj, stm_visit_fn *visit, void *ctx)
{
    stm_header *h = obj;
    switch (h->tid) {
    case T_NODE: {
        node *n = obj;
        visit((void **)&n->left, ctx);
        visit((void **)&n->right, ctx);
        return;
    }
    case T_ARRAY: {
        array *a = obj;
        for (long i = 0; i < a->n; i++)
            visit(&a->items[i], ctx);
        return;
    }
    default:
        fprintf(stderr, "ts_trace: unknown tid %u at %p\n", h->tid, obj);
        abort();
    }
}

void ts_register_prebuilt(node *n, long value)
{
    n->value = value;
    cr_assert_eq(stm_register_prebuilt(n), STM_OK, "stm_register_prebuilt failed");
}

/* ---- checks in any thread --------------------------------------------- */

static pthread_t ts_main_thread;
static bool ts_main_known;

__attribute__((constructor)) static void ts_note_main_thread(void)
{
    ts_main_thread = pthread_self();
    ts_main_known = true;
}

static bool in_main_thread(void)
{
    return ts_main_known && pthread_equal(pthread_self(), ts_main_thread);
}

static pthread_mutex_t ls_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ls_cond = PTHREAD_COND_INITIALIZER;
static int ls_current;
static bool ls_failed;
static char ls_failure[1024];

static void worker_fail(const char *msg)
{
    pthread_mutex_lock(&ls_mutex);
    if (!ls_failed) {
        ls_failed = true;
        snprintf(ls_failure, sizeof ls_failure, "%s", msg);
    }
    pthread_cond_broadcast(&ls_cond);
    pthread_mutex_unlock(&ls_mutex);
    fprintf(stderr, "[worker thread] %s\n", msg);
    pthread_exit(NULL);
}

void ts_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char detail[700], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof msg, "%s:%d: check failed: %s: %s", file, line, cond, detail);
    if (in_main_thread())
        cr_assert_fail("%s", msg);
    worker_fail(msg);
}

/* ---- fatal errors ------------------------------------------------------ */

static __thread jmp_buf *fatal_jb;
static char fatal_msg[1024];
static int fatal_count;

void ts_fatal_arm(jmp_buf *jb) { fatal_jb = jb; }
void ts_fatal_disarm(void) { fatal_jb = NULL; }
const char *ts_fatal_message(void) { return fatal_msg; }
int ts_fatal_count(void) { return __atomic_load_n(&fatal_count, __ATOMIC_SEQ_CST); }

void ts_fatal_handler(const char *msg)
{
    snprintf(fatal_msg, sizeof fatal_msg, "%s", msg ? msg : "(null)");
    __atomic_fetch_add(&fatal_count, 1, __ATOMIC_SEQ_CST);
    jmp_buf *jb = fatal_jb;
    if (jb) {
        fatal_jb = NULL;
        longjmp(*jb, 1);
    }
    char buf[1100];
    snprintf(buf, sizeof buf, "unexpected libstm fatal error: %s", fatal_msg);
    /* The library may hold its locks (a fatal error inside a collection
     * does): unwinding into the test's .fini would then wait for them
     * until Criterion's timeout.  Crash instead; the message is above. */
    fprintf(stderr, "%s\n", buf);
    abort();
}

/* ---- fixtures ----------------------------------------------------------- */

void ts_config(stm_config *cfg, const ts_options *opt)
{
    stm_config_init(cfg);
    cfg->object_size = ts_object_size;
    cfg->trace = ts_trace;
    if (opt && opt->nursery_size)
        cfg->nursery_size = opt->nursery_size;
    if (opt && opt->max_attempts)
        cfg->max_attempts = opt->max_attempts;
    if (opt && opt->shadow_stack_size)
        cfg->shadow_stack_size = opt->shadow_stack_size;
}

void ts_setup_with(const ts_options *opt)
{
    ts_main_thread = pthread_self();
    ts_main_known = true;
    stm_set_fatal_handler(ts_fatal_handler);
    stm_config cfg;
    ts_config(&cfg, opt);
    int r = stm_init(&cfg);
    cr_assert_eq(r, STM_OK, "stm_init returned %d", r);
    r = stm_thread_attach();
    cr_assert_eq(r, STM_OK, "stm_thread_attach returned %d", r);
}

void ts_setup(void) { ts_setup_with(NULL); }

void ts_setup_small(void)
{
    ts_options o = { .nursery_size = 64 << 10 };
    ts_setup_with(&o);
}

void ts_setup_tiny(void)
{
    ts_options o = { .nursery_size = 4096 };
    ts_setup_with(&o);
}

void ts_teardown(void)
{
    if (!stm_in_transaction())
        (void)stm_thread_detach();
}

/* ---- lockstep ------------------------------------------------------------ */

static void ls_report_failure_locked(void)
{
    char copy[sizeof ls_failure];
    memcpy(copy, ls_failure, sizeof copy);
    pthread_mutex_unlock(&ls_mutex);
    if (in_main_thread())
        cr_assert_fail("another thread failed: %s", copy);
    pthread_exit(NULL);
}

void ls_set(int step)
{
    pthread_mutex_lock(&ls_mutex);
    ls_current = step;
    pthread_cond_broadcast(&ls_cond);
    pthread_mutex_unlock(&ls_mutex);
}

void ls_wait(int step)
{
    pthread_mutex_lock(&ls_mutex);
    while (ls_current < step && !ls_failed)
        pthread_cond_wait(&ls_cond, &ls_mutex);
    if (ls_failed) {
        ls_report_failure_locked();
        return;
    }
    pthread_mutex_unlock(&ls_mutex);
}

int ls_step(void)
{
    pthread_mutex_lock(&ls_mutex);
    int s = ls_current;
    pthread_mutex_unlock(&ls_mutex);
    return s;
}

typedef struct spawn_ctx {
    ts_thread_fn *fn;
    void *arg;
    bool attach;
} spawn_ctx;

static void *thread_main(void *p)
{
    spawn_ctx cx = *(spawn_ctx *)p;
    free(p);
    if (cx.attach) {
        int r = stm_thread_attach();
        CHECK(r == STM_OK, "stm_thread_attach in a new thread returned %d", r);
    }
    cx.fn(cx.arg);
    if (cx.attach) {
        int r = stm_thread_detach();
        CHECK(r == STM_OK, "stm_thread_detach at the end of a thread returned %d", r);
    }
    return NULL;
}

static pthread_t spawn(ts_thread_fn *fn, void *arg, bool attach)
{
    spawn_ctx *cx = malloc(sizeof *cx);
    cr_assert_not_null(cx);
    cx->fn = fn;
    cx->arg = arg;
    cx->attach = attach;
    pthread_t th;
    int r = pthread_create(&th, NULL, thread_main, cx);
    cr_assert_eq(r, 0, "pthread_create failed");
    return th;
}

pthread_t ts_spawn(ts_thread_fn *fn, void *arg) { return spawn(fn, arg, true); }
pthread_t ts_spawn_unattached(ts_thread_fn *fn, void *arg) { return spawn(fn, arg, false); }

void ts_join(pthread_t th)
{
    pthread_join(th, NULL);
    pthread_mutex_lock(&ls_mutex);
    if (ls_failed)
        ls_report_failure_locked();
    else
        pthread_mutex_unlock(&ls_mutex);
}

void two_threads(ts_thread_fn *a, ts_thread_fn *b, void *arg)
{
    pthread_t th = ts_spawn(b, arg);
    a(arg);
    ts_join(th);
}

/* ---- helpers ------------------------------------------------------------- */

stm_stats ts_stats(void)
{
    stm_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    int r = stm_get_stats(&s);
    CHECK(r == STM_OK, "stm_get_stats returned %d", r);
    return s;
}

node *ts_new_node(long value, node *left, node *right)
{
    stm_push_root(left);
    stm_push_root(right);
    node *n = stm_allocate(sizeof(node), T_NODE);
    right = stm_pop_root();
    left = stm_pop_root();
    CHECK(n != NULL, "stm_allocate(node) returned NULL");
    n = stm_write(n);
    n->value = value;
    n->left = left;
    n->right = right;
    return n;
}

node *ts_build_tree(int depth, long *next)
{
    if (depth == 0)
        return NULL;
    node *l = ts_build_tree(depth - 1, next);
    stm_push_root(l);
    node *r = ts_build_tree(depth - 1, next);
    l = stm_pop_root();
    return ts_new_node((*next)++, l, r);
}

long ts_check_tree(node *t, int depth, long *next, bool *ok)
{
    if (depth == 0) {
        if (t != NULL)
            *ok = false;
        return 0;
    }
    if (t == NULL) {
        *ok = false;
        return 0;
    }
    node *r = stm_read(t);
    long n = ts_check_tree(r->left, depth - 1, next, ok);
    n += ts_check_tree(r->right, depth - 1, next, ok);
    if (r->value != (*next)++)
        *ok = false;
    return n + 1;
}

void ts_run(stm_tx_fn *fn, void *arg)
{
    int r = stm_run(fn, arg);
    CHECK(r == STM_OK, "stm_run returned %d", r);
}

void ts_churn(size_t bytes)
{
    for (size_t done = 0; done < bytes; done += sizeof(node)) {
        node *n = stm_allocate(sizeof(node), T_NODE);
        CHECK(n != NULL, "stm_allocate returned NULL");
    }
}

bool ts_distinct_cache_slots(const void *const *ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if ((uint16_t)(uintptr_t)ptrs[i] == (uint16_t)(uintptr_t)ptrs[j])
                return false;
    return true;
}
