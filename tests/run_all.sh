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
# Usage: tests/run_all.sh [extra scons arguments, e.g. --cc=clang --werror]
# STM_VARIANTS="debug asan" tests/run_all.sh runs a subset.
set -euo pipefail

cd "$(dirname "$0")/.."

read -r -a variants <<< "${STM_VARIANTS:-release debug asan tsan}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

passed=0
for v in "${variants[@]}"; do
    echo "=== variant $v"
    # pipefail: a failing scons fails the pipeline even though tee succeeds.
    if ! scons -Q -j2 --variant="$v" "$@" test 2>&1 | tee "$log"; then
        echo "variant $v FAILED" >&2
        exit 1
    fi
    # Criterion's closing line: "[====] Synthesis: Tested: N | Passing: N |
    # Failing: N | Crashing: N".  scons already failed if Failing > 0.
    n=$(sed -n 's/.*Synthesis: Tested: [0-9]* | Passing: \([0-9]*\) .*/\1/p' "$log" | tail -n 1)
    passed=$((passed + ${n:-0}))
done

echo "all variants passed: ${variants[*]}"
# Last line in the plain "N passed, N failed" form that CI tools read: the
# Criterion tests summed over the variants (tests/progs/ runs not counted).
echo "tests: $passed passed, 0 failed"
