/* pinning.h -- one worker thread per core with hwloc, inside the CPUs the
 * process may use.
 *
 * hwloc's "allowed" cpuset reflects cgroups but not the affinity mask the
 * process inherited (taskset, numactl, hwloc-bind): binding threads to it
 * alone would escape `taskset -c 1`.  So the usable set is
 *     allowed cpuset  AND  hwloc_get_cpubind(HWLOC_CPUBIND_PROCESS)
 * and a core counts only if it has a usable PU (see
 * ../shared/reference/reliability.md, section 4). */
#ifndef DEMO_PINNING_H
#define DEMO_PINNING_H

#include <stddef.h>

/* Loads the topology and computes the usable cores.  Returns the number of
 * usable cores (at least 1), or 0 with a message in `err` if hwloc cannot
 * be used at all (the demos then run unpinned). */
int demo_cpus_init(char *err, size_t errlen);

/* The number of usable cores found by demo_cpus_init (0 if it failed). */
int demo_cpus_count(void);

/* Binds the calling thread to usable core `slot % count` (one PU of it,
 * singlified so that the thread does not migrate inside the core).
 * Returns the OS index of that PU, or -1 if binding is unsupported or
 * failed (the thread then runs unpinned). */
int demo_cpus_bind_self(int slot);

/* A short description of the usable set, e.g. "2 cores (PUs 0-1)". */
const char *demo_cpus_describe(void);

void demo_cpus_destroy(void);

#endif
