#!/usr/bin/env bash
# GCBench on libstm and on Boehm GC, side by side (bench/gcbench_core.h
# describes the benchmark; both programs are built from it).
#
#   bench/gcbench.sh                    build (scons -Q -j2 bench), then run
#                                       libstm and Boehm with 1 and 2 threads,
#                                       --runs times each, and print the table
#   bench/gcbench.sh --runs 5           median of 5 runs (default 3)
#   bench/gcbench.sh --json             one JSON object per run instead
#   bench/gcbench.sh --threads "1 2 4"  other thread counts
#   bench/gcbench.sh --no-build         use the binaries as they are
#   bench/gcbench.sh --max-depth 18 --heap-mb 256 --check all ...
#                                       any other option goes to both programs
#                                       (see build/release/bench/gcbench --help)
#   VARIANT=debug bench/gcbench.sh      another build variant
#
# Every run is its own process (peak RSS is per process); the runs of the
# configurations are interleaved (run 1 of each, then run 2 of each, ...)
# so that a slow spell of the machine does not land on one side only.  The
# table shows, for each configuration, the run with the median wall time
# (the lower middle one for an even count) and the range of wall times.
# A run that fails (non-zero exit: a wrong tree, out of memory in the heap
# budget) is left out of the median and reported under the table.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=3
json=false
build=true
threads_list="1 2"
pass=()
while (($#)); do
    case $1 in
        --runs) runs=${2:?--runs needs a value}; shift ;;
        --threads) threads_list=${2:?--threads needs a value}; shift ;;
        --json) json=true ;;
        --no-build) build=false ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) pass+=("$1") ;;
    esac
    shift
done
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: --runs: expected a positive number, got '$runs'" >&2
    exit 2
fi

variant=${VARIANT:-release}
bin=build/$variant/bench
if $build; then
    # -k: the Boehm program is still built if the libstm one does not link.
    if ! scons -Q -j2 -k "variant=$variant" bench >&2; then
        echo "$0: warning: the build failed; running whatever binaries exist" >&2
    fi
fi

tmp=$(mktemp -d /tmp/stm-gcbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

prog_of() { [[ $1 == boehm ]] && echo "$bin/gcbench_boehm" || echo "$bin/gcbench"; }

# jget KEY < line: the value of a top-level member of our one-line JSON
# (numbers, null, true/false, or strings without quotes inside).
jget() { sed -nE "s/.*\"$1\":(\"[^\"]*\"|[^,}]*).*/\1/p" | tr -d '"'; }

for ((r = 1; r <= runs; r++)); do
    for t in $threads_list; do
        for gc in libstm boehm; do
            prog=$(prog_of "$gc")
            [[ -x $prog ]] || continue
            out=$("$prog" --json --threads "$t" ${pass[@]+"${pass[@]}"} 2>"$tmp/err")
            rc=$?
            if [[ $rc -eq 0 && $out == \{* ]]; then
                echo "$out" >>"$tmp/ok.$gc.$t"
            else
                why=$(grep -m1 . "$tmp/err" | sed 's/["\\]/ /g')
                [[ -n $why ]] || why="exit status $rc"
                if [[ $out == \{* ]]; then
                    echo "$out" >>"$tmp/bad.$gc.$t"   # ran to the end, checks failed
                else
                    out="{\"benchmark\":\"gcbench\",\"gc\":\"$gc\",\"threads\":$t,\"ok\":false,\"exit_status\":$rc,\"error\":\"$why\"}"
                fi
                echo "$gc, $t thread(s), run $r: $why" >>"$tmp/failures"
            fi
            $json && echo "$out"
        done
    done
done
$json && exit 0

# ---- the table ---------------------------------------------------------

# The median run of a configuration (by wall time), or nothing.
median_line() {
    local f=$tmp/ok.$1.$2
    [[ -s $f ]] || return 0
    local n
    n=$(wc -l <"$f")
    while read -r line; do
        printf '%s\t%s\n' "$(jget wall_s <<<"$line")" "$line"
    done <"$f" | sort -g | sed -n "$(((n + 1) / 2))p" | cut -f2-
}

walls() {   # min-max of the wall times
    local f=$tmp/ok.$1.$2
    [[ -s $f ]] || return 0
    while read -r line; do jget wall_s <<<"$line"; done <"$f" | sort -g |
        awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f-%.3f", lo, hi }'
}

num() {     # num VALUE PRECISION: "-" for null or missing
    if [[ -z $1 || $1 == null ]]; then printf -- '-'; else printf "%.$2f" "$1"; fi
}

pauses() {  # p50/p99/max of one kind from a JSON line
    local p50 p99 max
    p50=$(jget "${1}_p50_ms" <<<"$2")
    p99=$(jget "${1}_p99_ms" <<<"$2")
    max=$(jget "${1}_max_ms" <<<"$2")
    if [[ -z $max || $max == null ]]; then printf -- '-'; return; fi
    printf '%s / %s / %s' "$(num "$p50" 2)" "$(num "$p99" 2)" "$(num "$max" 2)"
}

first=$(cat "$tmp"/ok.* "$tmp"/bad.* 2>/dev/null | head -1)
if [[ -z $first ]]; then
    echo "$0: no run completed" >&2
    [[ -s $tmp/failures ]] && sed 's/^/  /' "$tmp/failures" >&2
    exit 1
fi
printf 'GCBench (Boehm & Ellis): stretch tree depth %s, long-lived tree depth %s + %s doubles, ' \
    "$(jget stretch_depth <<<"$first")" "$(jget long_lived_depth <<<"$first")" \
    "$(jget array_size <<<"$first")"
printf 'temporary trees depth %s..%s (check: %s)\n' "$(jget min_depth <<<"$first")" \
    "$(jget max_depth <<<"$first")" "$(jget check <<<"$first")"
printf 'heap budget %s MiB on both sides; %s build, %s; median of %s run(s) by wall time\n' \
    "$(jget heap_mb <<<"$first")" "$variant" "$(jget compiler <<<"$first")" "$runs"
for gc in libstm boehm; do
    l=$(cat "$tmp"/ok.$gc.* "$tmp"/bad.$gc.* 2>/dev/null | head -1)
    [[ -n $l ]] || continue
    if [[ $gc == boehm ]]; then
        printf '  %s, %s marker thread(s), %s-byte nodes; every collection is a full one\n' \
            "$(jget gc_version <<<"$l")" "$(jget markers <<<"$l")" "$(jget node_bytes <<<"$l")"
    else
        tt=$(jget tx_trees <<<"$l")
        if [[ $tt == 0 ]]; then tt="transactions chunked by stm_should_break"
        else tt="at most $tt temporary trees per transaction"; fi
        printf '  %s, nursery %s KiB per thread, %s-byte nodes, %s\n' \
            "$(jget gc_version <<<"$l")" "$(($(jget nursery_bytes <<<"$l") / 1024))" \
            "$(jget node_bytes <<<"$l")" "$tt"
    fi
done
echo

fmt='%-7s %3s  %7s %-13s  %-12s  %-22s  %-22s  %8s  %s\n'
printf "$fmt" gc thr "wall s" "(min-max)" "GCs" "minor pause ms" "major/full pause ms" "peak RSS" check
printf "$fmt" "" "" "" "" "minor+major" "p50 / p99 / max" "p50 / p99 / max" "MiB" ""
declare -A wall
for t in $threads_list; do
    for gc in libstm boehm; do
        nok=0; nbad=0
        [[ -s $tmp/ok.$gc.$t ]] && nok=$(wc -l <"$tmp/ok.$gc.$t")
        nbad=$((runs - nok))
        line=$(median_line "$gc" "$t")
        if [[ -z $line ]]; then
            if [[ -x $(prog_of "$gc") ]]; then state="FAILED $nbad/$runs"; else state="not built"; fi
            printf "$fmt" "$gc" "$t" - "" - - - - "$state"
            continue
        fi
        w=$(jget wall_s <<<"$line")
        wall[$gc.$t]=$w
        if [[ $gc == boehm ]]; then
            gcs="$(jget major_gcs <<<"$line") full"
        else
            gcs="$(jget minor_gcs <<<"$line")+$(jget major_gcs <<<"$line")"
        fi
        state=ok
        ((nbad > 0)) && state="ok $nok/$runs, FAILED $nbad"
        printf "$fmt" "$gc" "$t" "$(num "$w" 3)" "($(walls "$gc" "$t"))" "$gcs" \
            "$(pauses minor "$line")" "$(pauses major "$line")" \
            "$(num "$(jget peak_rss_mib <<<"$line")" 1)" "$state"
    done
done
echo
ratios=()
for t in $threads_list; do
    if [[ -n ${wall[libstm.$t]:-} && -n ${wall[boehm.$t]:-} ]]; then
        ratios+=("$t thread(s) $(awk -v a="${wall[libstm.$t]}" -v b="${wall[boehm.$t]}" \
            'BEGIN { printf "%.2fx", a / b }')")
    else
        ratios+=("$t thread(s) n/a")
    fi
done
(IFS=,; echo "libstm/Boehm wall time:${ratios[*]/#/ }")
echo
echo "wall s: stretch tree + long-lived data (main thread) + temporary trees (each thread"
echo "  builds all of them; the long-lived data is shared).  Pauses: libstm from"
echo "  stm_get_gc_stats (histogram, within 3%); Boehm from GC_EVENT_START to GC_EVENT_END."
if [[ -s $tmp/failures ]]; then
    echo
    echo "failed runs:"
    sed 's/^/  /' "$tmp/failures"
    exit 1
fi
