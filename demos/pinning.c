/* pinning.c -- see pinning.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "pinning.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hwloc.h>

static hwloc_topology_t topo;
static int topo_loaded;
static hwloc_bitmap_t *core_sets;   /* one singlified PU per usable core */
static int ncores;
static char description[256];

/* The PUs this process may run on: hwloc's allowed set (cgroups) AND the
 * inherited process binding (taskset).  NULL on failure. */
static hwloc_bitmap_t usable_set(void)
{
    hwloc_bitmap_t set = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(topo));
    hwloc_bitmap_t bound = hwloc_bitmap_alloc();
    if (!set || !bound) {
        hwloc_bitmap_free(set);
        hwloc_bitmap_free(bound);
        return NULL;
    }
    if (hwloc_get_cpubind(topo, bound, HWLOC_CPUBIND_PROCESS) == 0) {
        hwloc_bitmap_and(set, set, bound);
    } else {
        /* No hwloc support for reading the binding: ask the kernel. */
        cpu_set_t cs;
        if (sched_getaffinity(0, sizeof cs, &cs) == 0) {
            hwloc_bitmap_zero(bound);
            for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &cs))
                    hwloc_bitmap_set(bound, (unsigned)i);
            hwloc_bitmap_and(set, set, bound);
        }
    }
    hwloc_bitmap_free(bound);
    return set;
}

int demo_cpus_init(char *err, size_t errlen)
{
    if (hwloc_get_api_version() >> 16 != HWLOC_API_VERSION >> 16) {
        snprintf(err, errlen, "hwloc ABI mismatch (built against 0x%x, running 0x%x)",
                 HWLOC_API_VERSION, hwloc_get_api_version());
        return 0;
    }
    if (hwloc_topology_init(&topo) != 0) {
        snprintf(err, errlen, "hwloc_topology_init failed");
        return 0;
    }
    if (hwloc_topology_load(topo) != 0) {
        snprintf(err, errlen, "hwloc_topology_load failed: %s", strerror(errno));
        hwloc_topology_destroy(topo);
        return 0;
    }
    topo_loaded = 1;
    hwloc_bitmap_t usable = usable_set();
    if (!usable || hwloc_bitmap_iszero(usable)) {
        snprintf(err, errlen, "no usable CPU found");
        hwloc_bitmap_free(usable);
        return 0;
    }
    /* Cores first (one thread per physical core); PUs if the topology has
     * no core objects. */
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    int n = hwloc_get_nbobjs_by_type(topo, type);
    if (n <= 0) {
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_by_type(topo, type);
    }
    core_sets = calloc((size_t)(n > 0 ? n : 1), sizeof *core_sets);
    if (!core_sets) {
        snprintf(err, errlen, "out of memory");
        hwloc_bitmap_free(usable);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        hwloc_obj_t obj = hwloc_get_obj_by_type(topo, type, (unsigned)i);
        if (!obj || !obj->cpuset || !hwloc_bitmap_intersects(obj->cpuset, usable))
            continue;
        hwloc_bitmap_t s = hwloc_bitmap_alloc();
        if (!s)
            continue;
        hwloc_bitmap_and(s, obj->cpuset, usable);
        hwloc_bitmap_singlify(s);
        core_sets[ncores++] = s;
    }
    if (ncores == 0) {
        snprintf(err, errlen, "no core intersects the usable CPUs");
        hwloc_bitmap_free(usable);
        return 0;
    }
    char list[200];
    hwloc_bitmap_list_snprintf(list, sizeof list, usable);
    snprintf(description, sizeof description, "%d %s (PUs %s)", ncores,
             type == HWLOC_OBJ_CORE ? (ncores == 1 ? "core" : "cores")
                                    : (ncores == 1 ? "PU" : "PUs"),
             list);
    hwloc_bitmap_free(usable);
    return ncores;
}

int demo_cpus_count(void)
{
    return ncores;
}

int demo_cpus_bind_self(int slot)
{
    if (ncores == 0)
        return -1;
    hwloc_bitmap_t s = core_sets[slot % ncores];
    if (hwloc_set_cpubind(topo, s, HWLOC_CPUBIND_THREAD) != 0)
        return -1;
    return hwloc_bitmap_first(s);
}

const char *demo_cpus_describe(void)
{
    return ncores ? description : "unpinned (hwloc unavailable)";
}

void demo_cpus_destroy(void)
{
    for (int i = 0; i < ncores; i++)
        hwloc_bitmap_free(core_sets[i]);
    free(core_sets);
    core_sets = NULL;
    ncores = 0;
    if (topo_loaded)
        hwloc_topology_destroy(topo);
    topo_loaded = 0;
}
