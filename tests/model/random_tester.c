/* random_tester.c -- runs the model-based random tester (rt.c) over many
 * seeds: first every seed listed in the regression file, then a range.
 *
 *   random_tester [--seeds N] [--first-seed S] [--seed S] [--ops N]
 *                 [--regressions FILE] [--nursery BYTES] [--verbose]
 *
 * Each seed gives one run of --ops operations (default 200) on two worker
 * threads in a deterministic interleaving.  A failure prints the seed,
 * the last operations and the mismatch, and exits 1; rerun that seed
 * alone with --seed S --verbose, and add it to the regression file
 * (tests/model/regressions.txt) once the bug is fixed. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt.h"

static uint64_t parse_u64(const char *name, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) {
        fprintf(stderr, "random_tester: %s: expected a number, got '%s'\n", name, s);
        exit(2);
    }
    return v;
}

static void run_seed(uint64_t seed, const rt_options *opt, rt_totals *tot, const char *origin)
{
    char label[96];
    snprintf(label, sizeof label, "seed %" PRIu64 "%s; rerun: random_tester --seed %" PRIu64
             " --ops %ld --verbose", seed, origin, seed, opt->ops);
    rt_source src = { .rng = seed * 0x2545f4914f6cdd1dull + 1 };
    rt_run(&src, opt, label, tot);
}

int main(int argc, char **argv)
{
    rt_options opt = { .ops = 200 };
    uint64_t seeds = 300, first = 1, single = 0;
    bool have_single = false;
    size_t nursery = 1024;
    const char *regressions = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--verbose")) {
            opt.verbose = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "usage: random_tester [--seeds N] [--first-seed S] [--seed S] "
                            "[--ops N] [--regressions FILE] [--nursery BYTES] [--verbose]\n");
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--seeds"))
            seeds = parse_u64(a, v);
        else if (!strcmp(a, "--first-seed"))
            first = parse_u64(a, v);
        else if (!strcmp(a, "--seed"))
            single = parse_u64(a, v), have_single = true;
        else if (!strcmp(a, "--ops"))
            opt.ops = (long)parse_u64(a, v);
        else if (!strcmp(a, "--nursery"))
            nursery = parse_u64(a, v);
        else if (!strcmp(a, "--regressions"))
            regressions = v;
        else {
            fprintf(stderr, "random_tester: unknown option %s\n", a);
            return 2;
        }
    }
    rt_init(nursery);
    rt_totals tot = { 0 };
    long regression_runs = 0;
    if (have_single) {
        run_seed(single, &opt, &tot, "");
    } else {
        if (regressions) {
            /* One seed per line; '#' starts a comment (why the seed is kept). */
            FILE *f = fopen(regressions, "r");
            if (!f) {
                fprintf(stderr, "random_tester: cannot open %s\n", regressions);
                return 2;
            }
            char line[256];
            while (fgets(line, sizeof line, f)) {
                char *hash = strchr(line, '#');
                if (hash)
                    *hash = 0;
                char *p = line + strspn(line, " \t\r\n");
                if (!*p)
                    continue;
                run_seed(parse_u64("regression seed", strtok(p, " \t\r\n")), &opt, &tot,
                         " (regression)");
                regression_runs++;
            }
            fclose(f);
        }
        for (uint64_t s = first; s < first + seeds; s++)
            run_seed(s, &opt, &tot, "");
    }
    printf("random tester: %ld runs (%ld regression seeds, seeds %" PRIu64 "..%" PRIu64
           "), %ld operations: %ld commits (%ld shared), %ld aborts (%ld required by the "
           "model, %ld allowed), %ld inevitable, %ld minor and %ld major collections, %ld full checks: "
           "all as the model says\n",
           tot.runs, regression_runs, have_single ? single : first,
           have_single ? single : first + seeds - 1, tot.ops, tot.commits, tot.commits_shared,
           tot.aborts, tot.aborts_required, tot.aborts_optional, tot.inevitable,
           tot.minor_collections, tot.major_collections, tot.verifies);
    return 0;
}
