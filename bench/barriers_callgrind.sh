#!/usr/bin/env bash
# Instructions per barrier operation (docs/perf_barriers.md), counted with
# callgrind, which is exact and the same from run to run, unlike the
# timings (perf counters are not available in this VM: "perf stat -e
# instructions true" says <not supported>).
#
#   bench/barriers_callgrind.sh              table: STM, baseline, overhead
#   bench/barriers_callgrind.sh --raw        the programs' tab-separated lines
#   VARIANT=debug bench/barriers_callgrind.sh   another build variant
#
# Runs build/<variant>/bench/barriers and barriers_baseline (built by
# "scons bench" if missing) in --callgrind mode: fixed small iteration
# counts, each measured loop between CALLGRIND_ZERO_STATS and
# CALLGRIND_DUMP_STATS_AT; the program reads the "summary:" line of each
# dump and subtracts the empty loop (same loop without the barrier).
set -euo pipefail
cd "$(dirname "$0")/.."

raw=false
case "${1:-}" in
    --raw) raw=true ;;
    "") ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--raw]" >&2; exit 2 ;;
esac

variant=${VARIANT:-release}
bin=build/$variant/bench
if [[ ! -x $bin/barriers || ! -x $bin/barriers_baseline ]]; then
    scons -Q "variant=$variant" bench >&2
fi
command -v valgrind >/dev/null || { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/stm-barriers-cg.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for prog in barriers barriers_baseline; do
    out=$tmp/$prog.cg
    valgrind --tool=callgrind -q --callgrind-out-file="$out" \
        "$bin/$prog" --callgrind --cg-out "$out" --raw >"$tmp/$prog.raw"
done

if $raw; then
    cat "$tmp/barriers.raw"
    exit 0
fi

echo "instructions per operation, net of the empty loop ($(valgrind --version), $(gcc -dumpfullversion 2>/dev/null | sed 's/^/gcc /'))"
echo "(reference rows: the empty loops themselves, not net)"
# Raw lines: R <id> <ns> <instr> <read_slow/op> <write_slow/op> <desc>
awk -F'\t' '
    FNR == NR { if ($1 == "R") base[$2] = $4; next }
    $1 == "R" {
        grp = $2; sub(/\..*/, "", grp)
        if (grp != last) {
            printf "%-10s %-66s %9s %9s %9s %7s %7s\n", grp, "", "STM", "baseline", "overhead", "rd.slow", "wr.slow"
            last = grp
        }
        b = ($2 in base) ? base[$2] : "nan"
        printf "  %-74s %9.1f %9.1f %9.1f %7.3f %7.3f\n", $7, $4, b, $4 - b, $5, $6
    }' "$tmp/barriers_baseline.raw" "$tmp/barriers.raw"
