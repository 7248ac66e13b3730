/* arch_rtm.h -- everything the library knows about Intel RTM as an
 * instruction set: the abort-status bits, the CPUID facts that say whether
 * RTM may be used, and (on x86 only) the instructions themselves.  Other
 * architectures compile the same code with RTM simply absent.
 *
 * The status bits and the two pure functions below (the CPUID verdict and
 * the abort classification) are plain C on every architecture, so that the
 * tests can check them on any machine.  Nothing here touches library
 * state; stm/rtm.c builds the backends and the retry policy on top
 * (docs/DESIGN.md 12, "Lock elision"). */
#ifndef STM_ARCH_RTM_H
#define STM_ARCH_RTM_H

#include <stdbool.h>
#include <stdint.h>

/* What XBEGIN returns: STARTED, or an abort status made of these bits and
 * an 8-bit code (bits 31..24) for explicit aborts.  The values are Intel's
 * (SDM vol. 1, 16.3.5), spelled out so that they exist on every target. */
#define STM_XBEGIN_STARTED   (~0u)
#define STM_XABORT_EXPLICIT  (1u << 0)   /* XABORT ran; the code is valid */
#define STM_XABORT_RETRY     (1u << 1)   /* the hardware thinks a retry may succeed */
#define STM_XABORT_CONFLICT  (1u << 2)   /* another core touched our read/write set */
#define STM_XABORT_CAPACITY  (1u << 3)   /* the read or write set overflowed */
#define STM_XABORT_DEBUG     (1u << 4)   /* a debug breakpoint was hit */
#define STM_XABORT_NESTED    (1u << 5)   /* aborted inside a nested transaction */
#define STM_XABORT_CODE(s)   (((s) >> 24) & 0xffu)

/* Our explicit abort codes. */
#define STM_XCODE_BUSY  0xffu   /* the elided lock was held at subscription */
#define STM_XCODE_FATAL 0xfeu   /* stm_fatal ran inside a hardware transaction */

/* The status of an explicit abort with `code`, as XBEGIN reports it. */
#define STM_XABORT_STATUS(code) (STM_XABORT_EXPLICIT | ((unsigned)(code) << 24))

/* ---- detection: a pure function of the CPUID registers ------------------ */

typedef struct stm_rtm_cpuid {
    unsigned max_leaf;       /* leaf 0, EAX */
    bool intel;              /* leaf 0 vendor string is "GenuineIntel" */
    unsigned leaf1_eax;      /* family, model, stepping */
    unsigned leaf7_ebx;      /* leaf 7 subleaf 0: bit 11 RTM, bit 4 HLE */
    unsigned leaf7_edx;      /* bit 11 RTM_ALWAYS_ABORT */
} stm_rtm_cpuid;

typedef enum stm_rtm_verdict {
    STM_RTM_CPU_ABSENT,       /* no CPUID leaf 7 or no RTM bit */
    STM_RTM_CPU_ALWAYS_ABORT, /* RTM_ALWAYS_ABORT: TSX disabled by microcode */
    STM_RTM_CPU_DENYLISTED,   /* a model with the TSX errata (glibc's list) */
    STM_RTM_CPU_PRESENT,      /* usable, subject to the start-up self-test */
} stm_rtm_verdict;

static inline stm_rtm_verdict stm_rtm_cpu_verdict(const stm_rtm_cpuid *c)
{
    if (c->max_leaf < 7 || !(c->leaf7_ebx & (1u << 11)))
        return STM_RTM_CPU_ABSENT;
    if (c->leaf7_edx & (1u << 11))
        return STM_RTM_CPU_ALWAYS_ABORT;
    unsigned family = (c->leaf1_eax >> 8) & 0xfu;
    unsigned model = (c->leaf1_eax >> 4) & 0xfu;
    unsigned stepping = c->leaf1_eax & 0xfu;
    if (family == 6 || family == 15)
        model += ((c->leaf1_eax >> 16) & 0xfu) << 4;
    if (!c->intel || family != 6)
        return STM_RTM_CPU_PRESENT;
    /* glibc's sysdeps/x86/cpu-features.c: Haswell (TSX erratum HSD136)
     * except Xeon E7 v3 stepping >= 4; Skylake-SP up to stepping 5;
     * Skylake, Kaby Lake and Coffee Lake clients up to stepping 0xc
     * (Intel disabled TSX on them by microcode, sometimes without
     * setting RTM_ALWAYS_ABORT). */
    switch (model) {
    case 0x3f:
        return stepping >= 4 ? STM_RTM_CPU_PRESENT : STM_RTM_CPU_DENYLISTED;
    case 0x3c: case 0x45: case 0x46:
        return STM_RTM_CPU_DENYLISTED;
    case 0x55:
        return stepping <= 5 ? STM_RTM_CPU_DENYLISTED : STM_RTM_CPU_PRESENT;
    case 0x8e: case 0x9e:
        return stepping <= 0xc ? STM_RTM_CPU_DENYLISTED : STM_RTM_CPU_PRESENT;
    case 0x4e: case 0x5e:
        return STM_RTM_CPU_DENYLISTED;
    default:
        return STM_RTM_CPU_PRESENT;
    }
}

/* ---- abort classification ------------------------------------------------ */

/* One cause per abort, the first that applies in this order.  The
 * statistics count aborts by cause; the retry policy (stm/rtm.c) acts on
 * it: BUSY waits for the lock and retries, CONFLICT and RETRY are
 * transient (retried a few times), everything else falls back at once. */
typedef enum stm_rtm_cause {
    STM_RTM_CAUSE_BUSY,      /* our explicit abort: the lock was held */
    STM_RTM_CAUSE_EXPLICIT,  /* another explicit code (stm_fatal inside) */
    STM_RTM_CAUSE_CAPACITY,
    STM_RTM_CAUSE_DEBUG,
    STM_RTM_CAUSE_NESTED,
    STM_RTM_CAUSE_CONFLICT,
    STM_RTM_CAUSE_RETRY,
    STM_RTM_CAUSE_UNKNOWN,   /* status 0 and anything else: interrupts,
                                system calls, page faults, TSX disabled */
    STM_RTM_CAUSE_COUNT
} stm_rtm_cause;

static inline stm_rtm_cause stm_rtm_classify(unsigned status)
{
    if (status & STM_XABORT_EXPLICIT)
        return STM_XABORT_CODE(status) == STM_XCODE_BUSY ? STM_RTM_CAUSE_BUSY
                                                         : STM_RTM_CAUSE_EXPLICIT;
    if (status & STM_XABORT_CAPACITY)
        return STM_RTM_CAUSE_CAPACITY;
    if (status & STM_XABORT_DEBUG)
        return STM_RTM_CAUSE_DEBUG;
    if (status & STM_XABORT_NESTED)
        return STM_RTM_CAUSE_NESTED;
    if (status & STM_XABORT_CONFLICT)
        return STM_RTM_CAUSE_CONFLICT;
    if (status & STM_XABORT_RETRY)
        return STM_RTM_CAUSE_RETRY;
    return STM_RTM_CAUSE_UNKNOWN;
}

/* ---- the instructions (x86 only) ----------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
#define STM_ARCH_HAS_RTM 1
#include <cpuid.h>
#include <immintrin.h>

/* Reads the registers detection needs; false if CPUID itself is missing. */
static inline bool stm_arch_read_cpuid(stm_rtm_cpuid *c)
{
    unsigned a, b, cx, d;
    *c = (stm_rtm_cpuid){ 0 };
    if (!__get_cpuid(0, &a, &b, &cx, &d))
        return false;
    c->max_leaf = a;
    /* "GenuineIntel" is EBX "Genu", EDX "ineI", ECX "ntel". */
    c->intel = b == 0x756e6547u && d == 0x49656e69u && cx == 0x6c65746eu;
    if (__get_cpuid(1, &a, &b, &cx, &d))
        c->leaf1_eax = a;
    if (c->max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
        c->leaf7_ebx = b;
        c->leaf7_edx = d;
    }
    return true;
}

/* Only functions compiled for the "rtm" target may use these; the rest of
 * the library has no ISA requirement.  Executing them on a CPU without
 * RTM raises #UD: call them only after detection said PRESENT. */
#define STM_RTM_TARGET __attribute__((target("rtm")))
STM_RTM_TARGET static inline unsigned stm_arch_xbegin(void) { return _xbegin(); }
STM_RTM_TARGET static inline void stm_arch_xend(void) { _xend(); }
STM_RTM_TARGET static inline int stm_arch_xtest(void) { return _xtest(); }
#define stm_arch_xabort(code) _xabort(code)   /* code: a constant */
#else
#define STM_ARCH_HAS_RTM 0
static inline bool stm_arch_read_cpuid(stm_rtm_cpuid *c)
{
    *c = (stm_rtm_cpuid){ 0 };
    return false;
}
#endif

#endif
