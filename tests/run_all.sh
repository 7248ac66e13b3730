#!/usr/bin/env bash
# Build and test the variants CI relies on, one after the other:
#   release  what users get
#   debug    STM_DEBUG=2 internal invariants, test hooks, the random tester
#            and the history checker
#   asan     AddressSanitizer + UBSan (freed nursery memory poisoned) over
#            the Criterion suite, the programs and the model tests
#   tsan     ThreadSanitizer over the programs, the random tester and the
#            history checker, at short sizes (Criterion cannot run under
#            TSan); its "test" target is this short stress run
# The long forms are "scons --variant=debug stress" (docs/TESTING.md).
#
# Lock elision (docs/DESIGN.md, "Lock elision") is off by default, so each
# variant first runs as users get it; debug and asan then run the whole
# test tier again with STM_RTM=auto on each RTM backend: hw (elision where
# the CPU has RTM, the plain locks behind the check elsewhere), emulate and
# script, so that the elided sections, the retry policy and the fallbacks
# are exercised on machines without RTM too.
#
# Usage: tests/run_all.sh [extra scons arguments, e.g. --cc=clang --werror]
# STM_VARIANTS="debug asan" tests/run_all.sh runs a subset;
# STM_RTM_BACKENDS="emulate" (or "") chooses the extra backends.
set -euo pipefail

cd "$(dirname "$0")/.."

read -r -a variants <<< "${STM_VARIANTS:-release debug asan tsan}"
read -r -a rtm_backends <<< "${STM_RTM_BACKENDS-hw emulate script}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

passed=0
# run LABEL [VAR=VALUE...]: one "scons test" in variant $v, adding the
# Criterion passes to $passed.
run() {
    local label=$1
    shift
    echo "=== $label"
    # pipefail: a failing scons fails the pipeline even though tee succeeds.
    if ! env "$@" scons -Q -j2 --variant="$v" "${scons_args[@]}" test 2>&1 | tee "$log"; then
        echo "$label FAILED" >&2
        exit 1
    fi
    # Criterion's closing line: "[====] Synthesis: Tested: N | Passing: N |
    # Failing: N | Crashing: N".  scons already failed if Failing > 0.
    n=$(sed -n 's/.*Synthesis: Tested: [0-9]* | Passing: \([0-9]*\) .*/\1/p' "$log" | tail -n 1)
    passed=$((passed + ${n:-0}))
}

scons_args=("$@")
for v in "${variants[@]}"; do
    run "variant $v"
    case $v in
    debug | asan)
        for b in "${rtm_backends[@]}"; do
            run "variant $v, STM_RTM=auto, RTM backend $b" STM_RTM=auto STM_RTM_BACKEND="$b"
        done
        ;;
    esac
done

echo "all variants passed: ${variants[*]}"
# Last line in the plain "N passed, N failed" form that CI tools read: the
# Criterion tests summed over the variants (tests/progs/ runs not counted).
echo "tests: $passed passed, 0 failed"
