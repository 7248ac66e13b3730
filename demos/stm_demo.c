/* stm_demo.c -- the main demo: runs the three Duhton workloads without STM
 * (the baseline), with the STM on one thread, and with the STM on every
 * thread count up to the number of usable cores, and prints a table like
 * the one of the 2013 "STM lisp experiments" post: seconds, the STM's
 * single-thread overhead, the speedups, the aborts seen and the share of
 * read barriers that took the slow path.
 *
 *   stm_demo [--json] [--small|--large] [--threads N] [--runs R]
 *            [--no-count] [--verbose] [square] [trees] [trees2]
 *
 * Every measurement is a child process (demo_baseline, demo_stm,
 * demo_count from this program's directory), so that one run's heap and
 * threads never disturb the next; the child measures its own task phase
 * and checks its own results.  The runs of one round are interleaved
 * (baseline, 1 thread, 2 threads, ..., then the next round, each round
 * starting one mode further) so that a slow spell of the machine does not
 * land on one mode only; the table gives the median of the rounds.
 *
 * Read barriers are counted in a separate pass with demo_count (the same
 * source with a counter in every barrier), once per thread count, never in
 * a timed run; the slow-path count comes from stm_get_stats() in the timed
 * runs themselves.
 *
 * Exit status: 0 if every run's results were right, 1 if any was wrong or
 * a child failed, 2 for a usage error. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pinning.h"

#define MAX_THREAD_COUNTS 64
#define MAX_RUNS 99

static const char *const all_demos[] = { "square", "trees", "trees2" };
#define NDEMOS 3

static struct {
    bool json, verbose, count;
    const char *size;        /* NULL, "--small" or "--large" */
    long threads;            /* 0: every count up to the cores */
    long runs;               /* 0: default */
    bool selected[NDEMOS];
} opt = { .count = true };

static char bindir[4096];

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stm_demo [options] [square] [trees] [trees2]\n"
            "  --json       print the results as one JSON object\n"
            "  --small      small sizes (what the tests run; one round by default)\n"
            "  --large      the 2015 sizes (square 2000 tasks, trees2 one shared\n"
            "               depth-20 tree walked 100 times)\n"
            "  --threads N  run the STM on N threads only, besides the baseline\n"
            "               (default: 1, 2, ... up to the usable cores)\n"
            "  --runs R     rounds of measurements; the table shows medians\n"
            "               (default 5, 1 with --small)\n"
            "  --no-count   skip the untimed pass that counts read barriers\n"
            "  --verbose    pass on what the demos print (square's roots)\n");
}

static long parse_long(const char *name, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "stm_demo: %s: expected %ld..%ld, got '%s'\n", name, min, max, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    bool any = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            opt.json = true;
        } else if (!strcmp(a, "--verbose")) {
            opt.verbose = true;
        } else if (!strcmp(a, "--no-count")) {
            opt.count = false;
        } else if (!strcmp(a, "--small") || !strcmp(a, "--large")) {
            opt.size = a;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            opt.threads = parse_long(a, argv[++i], 1, 1024);
        } else if (!strcmp(a, "--runs") && i + 1 < argc) {
            opt.runs = parse_long(a, argv[++i], 1, MAX_RUNS);
        } else {
            int d;
            for (d = 0; d < NDEMOS; d++)
                if (!strcmp(a, all_demos[d]))
                    break;
            if (d == NDEMOS) {
                fprintf(stderr, "stm_demo: unknown option or demo: %s\n", a);
                usage(stderr);
                exit(2);
            }
            opt.selected[d] = any = true;
        }
    }
    if (!any)
        for (int d = 0; d < NDEMOS; d++)
            opt.selected[d] = true;
    if (!opt.runs)
        opt.runs = opt.size && !strcmp(opt.size, "--small") ? 1 : 5;
}

/* ---- child runs -------------------------------------------------------- */

typedef struct run {
    bool done, ok;
    char *json;              /* the child's JSON line (malloc'd) or NULL */
    double seconds, cpu_seconds;
    uint64_t aborts, read_slow, write_slow, steals, minor_collections, inevitable;
    uint64_t read_barriers, write_barriers;
} run;

/* The number after "key": in the child's flat JSON text, or 0. */
static double json_number(const char *js, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(js, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0.0;
}

/* Reads the whole of `fd`. */
static char *slurp(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    return buf;
}

/* Runs `prog demo --json --threads N [size] [--verbose]` and fills `r`. */
static void run_child(const char *prog, const char *demo, long threads, run *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", bindir, prog);
    char tbuf[32];
    snprintf(tbuf, sizeof tbuf, "%ld", threads);
    const char *argv[10];
    int argc = 0;
    argv[argc++] = path;
    argv[argc++] = demo;
    argv[argc++] = "--json";
    argv[argc++] = "--threads";
    argv[argc++] = tbuf;
    if (opt.size)
        argv[argc++] = opt.size;
    if (opt.verbose)
        argv[argc++] = "--verbose";
    argv[argc] = NULL;

    memset(r, 0, sizeof *r);
    r->done = true;
    int fds[2];
    if (pipe(fds) != 0) {
        perror("stm_demo: pipe");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("stm_demo: fork");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)argv);
        fprintf(stderr, "stm_demo: cannot run %s: %s (build it with: scons -Q demos)\n", path,
                strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    char *out = slurp(fds[0]);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    bool exited_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!exited_ok) {
        if (WIFSIGNALED(status))
            fprintf(stderr, "stm_demo: %s %s --threads %ld: killed by signal %d\n", prog, demo,
                    threads, WTERMSIG(status));
        else
            fprintf(stderr, "stm_demo: %s %s --threads %ld: exit status %d\n", prog, demo,
                    threads, WEXITSTATUS(status));
    }
    if (!out)
        return;
    /* The result is the last line that starts with '{'; anything else is
     * what the demo printed (--verbose). */
    char *json = NULL;
    for (char *line = out, *nl; line && *line; line = nl) {
        nl = strchr(line, '\n');
        if (nl)
            *nl++ = 0;
        if (line[0] == '{')
            json = line;
        else if (opt.verbose)
            fprintf(opt.json ? stderr : stdout, "%s\n", line);
    }
    if (json) {
        r->json = strdup(json);
        r->ok = exited_ok && strstr(json, "\"ok\":true") != NULL;
        r->seconds = json_number(json, "seconds");
        r->cpu_seconds = json_number(json, "cpu_seconds");
        r->aborts = (uint64_t)json_number(json, "aborts");
        r->read_slow = (uint64_t)json_number(json, "read_slow");
        r->write_slow = (uint64_t)json_number(json, "write_slow");
        r->steals = (uint64_t)json_number(json, "steals");
        r->minor_collections = (uint64_t)json_number(json, "minor_collections");
        r->inevitable = (uint64_t)json_number(json, "inevitable");
        r->read_barriers = (uint64_t)json_number(json, "read_barriers");
        r->write_barriers = (uint64_t)json_number(json, "write_barriers");
    } else if (exited_ok) {
        fprintf(stderr, "stm_demo: %s %s printed no result\n", prog, demo);
    }
    free(out);
}

/* ---- statistics -------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The index of the run whose wall time is the median (lower median). */
static long median_index(const run *runs, long n)
{
    double t[MAX_RUNS];
    for (long i = 0; i < n; i++)
        t[i] = runs[i].seconds;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double m = t[(n - 1) / 2];
    for (long i = 0; i < n; i++)
        if (runs[i].seconds == m)
            return i;
    return 0;
}

static double med(const run *runs, long n)
{
    return runs[median_index(runs, n)].seconds;
}

/* Median CPU time (summed over the worker threads) of the runs. */
static double med_cpu(const run *runs, long n)
{
    double t[MAX_RUNS];
    for (long i = 0; i < n; i++)
        t[i] = runs[i].cpu_seconds;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[(n - 1) / 2];
}

static double min_seconds(const run *runs, long n)
{
    double m = runs[0].seconds;
    for (long i = 1; i < n; i++)
        if (runs[i].seconds < m)
            m = runs[i].seconds;
    return m;
}

static double max_seconds(const run *runs, long n)
{
    double m = runs[0].seconds;
    for (long i = 1; i < n; i++)
        if (runs[i].seconds > m)
            m = runs[i].seconds;
    return m;
}

static bool all_ok(const run *runs, long n)
{
    for (long i = 0; i < n; i++)
        if (!runs[i].ok)
            return false;
    return true;
}

static uint64_t total_aborts(const run *runs, long n)
{
    uint64_t a = 0;
    for (long i = 0; i < n; i++)
        a += runs[i].aborts;
    return a;
}

static void fmt_count(char *buf, size_t len, double v)
{
    if (v >= 1e9)
        snprintf(buf, len, "%.2f G", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, len, "%.2f M", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%.1f k", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
}

/* Steal time of the whole machine so far, in seconds (/proc/stat). */
static double steal_seconds(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[8] = { 0 };
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return n == 8 && hz > 0 ? (double)v[7] / (double)hz : 0;
}

/* Busy time of the whole machine so far (user + nice + system), in CPU
 * seconds: minus our own children's, it shows how busy other processes
 * kept the cores while we measured. */
static double busy_seconds(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long u = 0, ni = 0, sy = 0;
    int n = fscanf(f, "cpu %llu %llu %llu", &u, &ni, &sy);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return n == 3 && hz > 0 ? (double)(u + ni + sy) / (double)hz : 0;
}

/* CPU time used by our waited-for children so far. */
static double children_seconds(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    /* Fields 16 and 17: cutime and cstime, after the ')' of the name. */
    char buf[1024];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long cu = 0, cs = 0;
    /* After ')': state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %llu %llu", &cu,
               &cs) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(cu + cs) / (double)hz : 0;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the measurements -------------------------------------------------- */

typedef struct demo_result {
    const char *name;
    run base[MAX_RUNS];
    run stm[MAX_THREAD_COUNTS][MAX_RUNS];
    run count[MAX_THREAD_COUNTS];
} demo_result;

static long thread_counts[MAX_THREAD_COUNTS];
static long nthread_counts;

static void print_json(demo_result *results, bool ok, const char *size_name, long n,
                       double steal, double others, double elapsed)
{
    long one = -1;
    for (long t = 0; t < nthread_counts; t++)
        if (thread_counts[t] == 1)
            one = t;
    printf("{\"program\":\"stm_demo\",\"ok\":%s,\"size\":\"%s\",\"pinning\":\"%s\","
           "\"rounds\":%ld,\"steal_seconds\":%.2f,\"other_processes_cpu_seconds\":%.2f,"
           "\"elapsed_seconds\":%.2f,"
           "\"read_barrier_counting\":\"separate untimed pass of demo_count (counter in "
           "every barrier), one per thread count; slow-path reads from stm_get_stats in the "
           "timed runs\",\"thread_counts\":[",
           ok ? "true" : "false", size_name, demo_cpus_describe(), n, steal, others, elapsed);
    for (long t = 0; t < nthread_counts; t++)
        printf("%s%ld", t ? "," : "", thread_counts[t]);
    printf("],\"demos\":[");
    bool first = true;
    for (int d = 0; d < NDEMOS; d++) {
        if (!opt.selected[d])
            continue;
        demo_result *res = &results[d];
        double base = med(res->base, n);
        double stm1 = one >= 0 ? med(res->stm[one], n) : 0;
        bool demo_ok = all_ok(res->base, n);
        printf("%s{\"demo\":\"%s\",\"baseline\":{\"median\":%.6f,\"min\":%.6f,\"max\":%.6f,"
               "\"median_cpu\":%.6f,\"ok\":%s},\"stm\":[",
               first ? "" : ",", res->name, base, min_seconds(res->base, n),
               max_seconds(res->base, n), med_cpu(res->base, n),
               all_ok(res->base, n) ? "true" : "false");
        first = false;
        for (long t = 0; t < nthread_counts; t++) {
            const run *rs = res->stm[t];
            const run *m = &rs[median_index(rs, n)];
            const run *c = &res->count[t];
            demo_ok &= all_ok(rs, n) && (!opt.count || c->ok);
            printf("%s{\"threads\":%ld,\"median\":%.6f,\"min\":%.6f,\"max\":%.6f,"
                   "\"median_cpu\":%.6f,\"ok\":%s,\"speedup_vs_baseline\":%.4f,",
                   t ? "," : "", thread_counts[t], m->seconds, min_seconds(rs, n),
                   max_seconds(rs, n), med_cpu(rs, n), all_ok(rs, n) ? "true" : "false",
                   m->seconds > 0 ? base / m->seconds : 0);
            if (stm1 > 0)
                printf("\"speedup_vs_stm1\":%.4f,", m->seconds > 0 ? stm1 / m->seconds : 0);
            printf("\"aborts_all_rounds\":%" PRIu64 ",\"read_slow\":%" PRIu64
                   ",\"write_slow\":%" PRIu64 ",\"steals\":%" PRIu64
                   ",\"minor_collections\":%" PRIu64,
                   total_aborts(rs, n), m->read_slow, m->write_slow, m->steals,
                   m->minor_collections);
            if (opt.count && c->read_barriers) {
                printf(",\"read_barriers_counted\":%" PRIu64 ",\"write_barriers_counted\":%" PRIu64
                       ",\"read_slow_share\":%.8f,\"count_pass_read_slow\":%" PRIu64
                       ",\"count_pass_aborts\":%" PRIu64 ",\"count_pass_ok\":%s",
                       c->read_barriers, c->write_barriers,
                       (double)m->read_slow / (double)c->read_barriers, c->read_slow, c->aborts,
                       c->ok ? "true" : "false");
            }
            printf(",\"runs\":[");
            for (long r = 0; r < n; r++)
                printf("%s%s", r ? "," : "", rs[r].json ? rs[r].json : "null");
            printf("]}");
        }
        printf("]");
        if (stm1 > 0) {
            double bc = med_cpu(res->base, n), sc = med_cpu(res->stm[one], n);
            printf(",\"overhead_stm1_vs_baseline\":%.4f,\"overhead_cpu\":%.4f",
                   base > 0 ? stm1 / base : 0, bc > 0 ? sc / bc : 0);
        }
        printf(",\"baseline_runs\":[");
        for (long r = 0; r < n; r++)
            printf("%s%s", r ? "," : "", res->base[r].json ? res->base[r].json : "null");
        printf("],\"ok\":%s}", demo_ok ? "true" : "false");
    }
    printf("],\"targets\":{\"overhead_max\":1.15,\"speedup_2_threads_min\":1.9,"
           "\"read_slow_share_max\":0.01,\"aborts\":0}}\n");
}

static void print_tables(demo_result *results, bool ok, long n, double steal, double others,
                         double elapsed)
{
    long one = -1;
    for (long t = 0; t < nthread_counts; t++)
        if (thread_counts[t] == 1)
            one = t;

    /* Table 1: times, the blog's table plus the ratios. */
    printf("\n%-8s %9s", "seconds", "baseline");
    for (long t = 0; t < nthread_counts; t++) {
        char h[32];
        snprintf(h, sizeof h, thread_counts[t] == 1 ? "stm 1 thr" : "%ld threads",
                 thread_counts[t]);
        printf(" %10s", h);
    }
    printf("  %9s %9s", "overhead", "overhead");
    for (long t = 0; t < nthread_counts; t++)
        if (thread_counts[t] > 1) {
            char h[48];
            snprintf(h, sizeof h, "speedup %ld thr", thread_counts[t]);
            printf("  %-15s", h);
        }
    printf("\n%-8s %9s", "", "");
    for (long t = 0; t < nthread_counts; t++)
        printf(" %10s", "");
    printf("  %9s %9s", "(wall)", "(CPU)");
    for (long t = 0; t < nthread_counts; t++)
        if (thread_counts[t] > 1)
            printf("  %-15s", "vs stm1 vs base");
    printf("\n");
    for (int d = 0; d < NDEMOS; d++) {
        if (!opt.selected[d])
            continue;
        demo_result *res = &results[d];
        double base = med(res->base, n);
        double stm1 = one >= 0 ? med(res->stm[one], n) : 0;
        printf("%-8s %9.3f", res->name, base);
        for (long t = 0; t < nthread_counts; t++)
            printf(" %10.3f", med(res->stm[t], n));
        if (one >= 0 && base > 0) {
            double bc = med_cpu(res->base, n), sc = med_cpu(res->stm[one], n);
            printf("  %8.2fx %8.2fx", stm1 / base, bc > 0 ? sc / bc : 0.0);
        } else {
            printf("  %9s %9s", "-", "-");
        }
        for (long t = 0; t < nthread_counts; t++) {
            if (thread_counts[t] <= 1)
                continue;
            double s = med(res->stm[t], n);
            char h[40];
            if (one >= 0)
                snprintf(h, sizeof h, "%5.2fx  %5.2fx", stm1 / s, base / s);
            else
                snprintf(h, sizeof h, "    -   %5.2fx", base / s);
            printf("  %-15s", h);
        }
        printf("%s\n", all_ok(res->base, n) ? "" : "  (baseline results WRONG)");
    }

    /* Table 2: what the STM did (median run of each mode). */
    printf("\n%-8s %7s %7s %13s %22s %13s %11s %8s %9s %8s\n", "stm", "threads", "aborts",
           "read barriers", "slow-path reads", "write barr.", "slow writes", "steals",
           "minor GCs", "CPU s");
    for (int d = 0; d < NDEMOS; d++) {
        if (!opt.selected[d])
            continue;
        demo_result *res = &results[d];
        for (long t = 0; t < nthread_counts; t++) {
            const run *rs = res->stm[t];
            const run *m = &rs[median_index(rs, n)];
            const run *c = &res->count[t];
            char rb[32] = "-", wb[32] = "-", slow[48];
            if (opt.count && c->read_barriers) {
                fmt_count(rb, sizeof rb, (double)c->read_barriers);
                fmt_count(wb, sizeof wb, (double)c->write_barriers);
                snprintf(slow, sizeof slow, "%" PRIu64 " (%.4f%%)", m->read_slow,
                         100.0 * (double)m->read_slow / (double)c->read_barriers);
            } else {
                snprintf(slow, sizeof slow, "%" PRIu64, m->read_slow);
            }
            printf("%-8s %7ld %7" PRIu64 " %13s %22s %13s %11" PRIu64 " %8" PRIu64
                   " %9" PRIu64 " %8.3f%s\n",
                   t == 0 ? res->name : "", thread_counts[t],
                   total_aborts(rs, n) + (opt.count ? c->aborts : 0), rb, slow, wb,
                   m->write_slow, m->steals, m->minor_collections, med_cpu(rs, n),
                   all_ok(rs, n) && (!opt.count || c->ok) ? "" : "  (results WRONG)");
        }
    }
    printf("\naborts: all %ld timed round%s%s.  read barriers: counted in a separate untimed\n"
           "pass (demo_count, a counter in every barrier); slow-path reads: stm_get_stats() of\n"
           "the median timed run.  CPU s: median CPU time of the workers, summed (equal for\n"
           "all thread counts = no extra work with more threads).  Machine while measuring:\n"
           "steal time %.2f s, other processes %.2f CPU s in %.1f s (if that is not near 0,\n"
           "wall times and speedups are inflated by them; CPU times much less so).\n",
           n, n == 1 ? "" : "s", opt.count ? " plus the counting pass" : "", steal, others,
           elapsed);
    printf("targets (issue 4): overhead <= 1.15x; 2 threads >= 1.9x faster than stm 1 "
           "thread;\n< 1%% of read barriers on the slow path; no aborts.\n");
    printf("results: %s\n", ok ? "all checked and correct" : "SOME WRONG (see above)");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    ssize_t len = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
    if (len <= 0) {
        perror("stm_demo: readlink /proc/self/exe");
        return 1;
    }
    bindir[len] = 0;
    char *slash = strrchr(bindir, '/');
    if (slash)
        *slash = 0;

    char err[256];
    int ncores = demo_cpus_init(err, sizeof err);
    if (!ncores) {
        fprintf(stderr, "stm_demo: warning: %s; counting 1 core\n", err);
        ncores = 1;
    }
    if (opt.threads) {
        thread_counts[nthread_counts++] = opt.threads;
    } else {
        for (long t = 1; t <= ncores && t <= MAX_THREAD_COUNTS; t++)
            thread_counts[nthread_counts++] = t;
    }
    const char *size_name = !opt.size ? "default" : opt.size + 2;

    static demo_result results[NDEMOS];
    bool ok = true;
    if (!opt.json) {
        printf("libstm demos (Duhton square / trees / trees2, %s sizes): %s usable;\n"
               "%ld round%s, median wall seconds of the task phase\n",
               size_name, demo_cpus_describe(), opt.runs, opt.runs == 1 ? "" : "s");
        fflush(stdout);
    }
    double steal0 = steal_seconds(), busy0 = busy_seconds(), kids0 = children_seconds();
    double wall0 = wall_seconds();
    for (int d = 0; d < NDEMOS; d++) {
        if (!opt.selected[d])
            continue;
        demo_result *res = &results[d];
        res->name = all_demos[d];
        /* Each round runs every mode once; the first mode of a round moves
         * along from round to round, since the first process after a pause
         * tends to fare differently on a busy machine. */
        long modes = 1 + nthread_counts;
        for (long r = 0; r < opt.runs; r++) {
            for (long i = 0; i < modes; i++) {
                long mode = (r + i) % modes;
                if (mode == 0) {
                    run_child("demo_baseline", res->name, 1, &res->base[r]);
                    ok &= res->base[r].ok;
                } else {
                    long t = mode - 1;
                    run_child("demo_stm", res->name, thread_counts[t], &res->stm[t][r]);
                    ok &= res->stm[t][r].ok;
                }
            }
        }
        if (opt.count) {
            for (long t = 0; t < nthread_counts; t++) {
                run_child("demo_count", res->name, thread_counts[t], &res->count[t]);
                ok &= res->count[t].ok;
            }
        }
    }
    double steal = steal_seconds() - steal0;
    double elapsed = wall_seconds() - wall0;
    double others = (busy_seconds() - busy0) - (children_seconds() - kids0);
    if (others < 0)
        others = 0;

    if (opt.json)
        print_json(results, ok, size_name, opt.runs, steal, others, elapsed);
    else
        print_tables(results, ok, opt.runs, steal, others, elapsed);
    demo_cpus_destroy();
    return ok ? 0 : 1;
}
