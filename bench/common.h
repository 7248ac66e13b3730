/* common.h -- small helpers shared by the programs in bench/: a monotonic
 * clock, medians, pinning to one core with hwloc, and an attribute that
 * keeps a measured loop out of line and unspecialised.
 *
 * Header-only (static functions), so that each bench/<name>.c stays one
 * program built from one source file (bench/SConscript). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <hwloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Out of line and never cloned or specialised on constant arguments (gcc's
 * IPA constant propagation would otherwise make a copy of a kernel for
 * each call site, and the "same loop" would not be the same code). */
#if defined(__clang__)
#  define BENCH_NOINLINE __attribute__((noinline))
#else
#  define BENCH_NOINLINE __attribute__((noipa))
#endif

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n-1] (the mean of the two middle values for even n). */
static inline double bench_median(const double *v, int n)
{
    if (n <= 0)
        return 0.0 / 0.0;
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return v[0];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    double m = (n & 1) ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

/* Pins the calling thread to one processing unit among those the process
 * may run on (its current binding, as set by taskset or a cgroup,
 * intersected with hwloc's allowed set): `want` (an OS index) if it is
 * among them, otherwise the last one (CPU 0 usually takes more of the
 * interrupts).  Returns the OS index of the PU, or -1 after printing why
 * to stderr (the benchmark then runs unpinned). */
static inline int bench_pin_to_one_pu(int want)
{
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0)
        return -1;
    int pu = -1;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set || hwloc_topology_load(topo) != 0)
        goto out;
    if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0)
        hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(topo));
    else
        hwloc_bitmap_and(set, set, hwloc_topology_get_allowed_cpuset(topo));
    if (hwloc_bitmap_iszero(set)) {
        fprintf(stderr, "bench: no allowed CPU found; running unpinned\n");
        goto out;
    }
    pu = (want >= 0 && hwloc_bitmap_isset(set, (unsigned)want)) ? want
                                                                : hwloc_bitmap_last(set);
    hwloc_bitmap_only(set, (unsigned)pu);
    if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_THREAD) != 0) {
        fprintf(stderr, "bench: cannot bind to CPU %d; running unpinned\n", pu);
        pu = -1;
    }
out:
    if (set)
        hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
    return pu;
}

/* "gcc 12.2.0" or "clang 14.0.6", for report headers. */
static inline const char *bench_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown compiler";
#endif
}

#endif
