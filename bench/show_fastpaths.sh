#!/usr/bin/env bash
# Disassembles the inline barrier fast paths as gcc and clang compile them
# with the release flags (docs/PERFORMANCE.md quotes the output).
set -euo pipefail
cd "$(dirname "$0")/.."
for cc in gcc clang; do
    command -v "$cc" >/dev/null || continue
    echo "=== $cc $("$cc" -dumpversion)"
    "$cc" -std=gnu11 -O2 -DNDEBUG -fPIE -Iinclude -c bench/disasm/fastpaths.c -o /tmp/stm_fastpaths.o
    objdump -d --no-show-raw-insn -M att /tmp/stm_fastpaths.o |
        sed -n '/<read_field>:/,$p' | grep -v '^$'
done
