#!/usr/bin/env python3
"""elision.py -- lock elision (issue 6, docs/DESIGN.md "Lock elision"): on
versus off on the demos, the bank program and the barrier benchmark, and
the cost of the disabled check against a build without elision.

    bench/elision.py [--rounds N] [--threads N] [--base REV] [--no-callgrind]

1. Says what STM_RTM=auto decides on this machine (stm_rtm_enabled).  If
   RTM is unavailable, "auto" runs the very code path "off" runs (the
   check, then the plain lock), so the timings below only show noise and
   the fallback cost is what section 4 measures.
2. Demos (demo_stm square/trees/trees2, --threads N) and bank (2 threads,
   1M transfers): STM_RTM=off and STM_RTM=auto interleaved, N rounds,
   medians, the ratio auto/off, and the elision counters.
3. bench/barriers (ns/op, no callgrind) for the cases that take locks.
4. Callgrind instruction counts (exact, unlike timings): the demos and
   bank on one thread (deterministic), and the barrier cases, STM_RTM=off on this tree against
   the tree at REV (default: the commit before stm/rtm.c was added), built
   in a temporary directory.  The difference is the fallback cost.

Builds what it needs with scons (release variant).  Python because SCons
already requires it; nothing outside the standard library."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = ('square', 'trees', 'trees2')
LOCK_CASES = ('write.protected.first', 'write.outdated_own.first',
              'tx.write1.private', 'tx.write4.private', 'tx.write1.shared',
              'tx.write4.shared')

STATE_C = r'''
#include <stdio.h>
#include <stm.h>
static size_t sz(const void *o) { (void)o; return sizeof(stm_header); }
static void tr(void *o, stm_visit_fn *v, void *c) { (void)o; (void)v; (void)c; }
int main(void)
{
    stm_config cfg;
    stm_config_init(&cfg);
    cfg.object_size = sz;
    cfg.trace = tr;
    int r = stm_init(&cfg);
    const char *why;
    stm_rtm_enabled(&why);
    printf("%s%s\n", why, r == STM_OK ? "" : " (stm_init failed)");
    return 0;
}
'''


def run(cmd, env_extra=None, cwd=ROOT):
    env = dict(os.environ)
    env.pop('STM_RTM_BACKEND', None)
    if env_extra:
        env.update(env_extra)
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit('elision.py: %s failed:\n%s' % (' '.join(cmd), p.stderr))
    return p.stdout


def build(tree):
    run(['scons', '-Q', '-j2', '--variant=release', 'demos', 'bench',
         'build/release/tests/progs/bank'], cwd=tree)


def rtm_state(tmp):
    src = os.path.join(tmp, 'state.c')
    exe = os.path.join(tmp, 'state')
    with open(src, 'w') as f:
        f.write(STATE_C)
    run(['cc', '-std=gnu11', '-Iinclude', src, 'build/release/libstm.a',
         '-pthread', '-o', exe])
    return run([exe], {'STM_RTM': 'auto'}).strip()


def demo_cmd(tree, demo, threads):
    return [os.path.join(tree, 'build/release/demos/demo_stm'), demo,
            '--threads', str(threads), '--json']


def bank_cmd(tree):
    return [os.path.join(tree, 'build/release/tests/progs/bank'), '--threads', '2',
            '--checkers', '1', '--nursery', '65536', '--transfers', '1000000', '--json']


def timed(rounds, threads):
    """{name: {mode: [(value, stats)]}}, off/auto interleaved."""
    res = {}
    for r in range(rounds):
        modes = ('off', 'auto') if r % 2 == 0 else ('auto', 'off')
        for mode in modes:
            for d in DEMOS:
                j = json.loads(run(demo_cmd(ROOT, d, threads), {'STM_RTM': mode}))
                res.setdefault(d, {}).setdefault(mode, []).append((j['seconds'], j['stats']))
            j = json.loads(run(bank_cmd(ROOT), {'STM_RTM': mode}))
            res.setdefault('bank', {}).setdefault(mode, []).append(
                (1e6 / j['transfers_per_s'], j.get('stats', j)))   # s per 1M transfers
    return res


def report_timed(res, threads):
    print('\n2. Timings, STM_RTM=off vs auto (median of the rounds; demos on %d '
          'threads, bank on 2 threads + 1 checker, 1M transfers)' % threads)
    print('%-8s %10s %10s %8s %12s %10s %10s' % ('', 'off s', 'auto s', 'auto/off',
                                                  'elided/run', 'fallb/run', 'aborts/run'))
    for name, modes in res.items():
        off = statistics.median(v for v, _ in modes['off'])
        on = statistics.median(v for v, _ in modes['auto'])
        st = [s for _, s in modes['auto']]
        el = statistics.median(s.get('rtm_elided', 0) for s in st)
        fb = statistics.median(s.get('rtm_fallbacks', 0) for s in st)
        ab = statistics.median(sum(v for k, v in s.items() if k.startswith('rtm_abort_'))
                               for s in st)
        print('%-8s %10.4f %10.4f %8.3f %12d %10d %10d' % (name, off, on, on / off, el, fb, ab))
    print('(bank: seconds per 1M transfers)')


def barrier_raw(tree, mode, instr):
    args = [os.path.join(tree, 'build/release/bench/barriers'), '--raw', '--no-baseline',
            '--runs', '5']
    if not instr:
        args.append('--no-instr')
    out = run(args, {'STM_RTM': mode})
    rows = {}
    for line in out.splitlines():
        f = line.split('\t')
        if len(f) >= 7 and f[0] == 'R':
            rows[f[1]] = (float(f[2]), float(f[3]), f[6])
    return rows


def report_barriers():
    print('\n3. bench/barriers, the cases that take the collection lock (ns/op, '
          'median of 5 runs; off, auto, off, auto)')
    runs = [barrier_raw(ROOT, m, False) for m in ('off', 'auto', 'off', 'auto')]
    for case in LOCK_CASES:
        if case not in runs[0]:
            continue
        vals = ['%8.2f' % r[case][0] for r in runs]
        print('  %-58s %s' % (runs[0][case][2][:58], ' '.join(vals)))


def callgrind_ir(cmd, env_extra, tmp):
    out = os.path.join(tmp, 'cg.out')
    run(['valgrind', '--tool=callgrind', '-q', '--callgrind-out-file=' + out] + cmd,
        env_extra)
    with open(out) as f:
        for line in f:
            m = re.match(r'(summary|totals): (\d+)', line)
            if m:
                return int(m.group(2))
    sys.exit('elision.py: no totals in the callgrind output')


def report_callgrind(base_tree, base_rev, tmp):
    print('\n4. Fallback cost in instructions (callgrind): STM_RTM=off on this tree '
          'vs %s without elision' % base_rev[:12])
    print('%-8s %14s %14s %9s' % ('', 'base Ir', 'this Ir', 'change'))
    progs = [(d, demo_cmd, d) for d in DEMOS]
    for name, mk, arg in progs:
        b = callgrind_ir(mk(base_tree, arg, 1), {}, tmp)
        t = callgrind_ir(mk(ROOT, arg, 1), {'STM_RTM': 'off'}, tmp)
        print('%-8s %14d %14d %+8.3f%%' % (name + '/1', b, t, (t - b) * 100.0 / b))
    # One thread: with two, spinning and retries make the count vary by
    # several percent from run to run.
    def small_bank(tree):
        return [os.path.join(tree, 'build/release/tests/progs/bank'), '--threads', '1',
                '--checkers', '0', '--nursery', '65536', '--transfers', '100000', '--json']
    b = callgrind_ir(small_bank(base_tree), {}, tmp)
    t = callgrind_ir(small_bank(ROOT), {'STM_RTM': 'off'}, tmp)
    print('%-8s %14d %14d %+8.3f%%' % ('bank/1', b, t, (t - b) * 100.0 / b))
    print('barrier cases, instructions per operation (base -> this, STM_RTM=off):')
    bb = barrier_raw(base_tree, 'off', True)
    tt = barrier_raw(ROOT, 'off', True)
    for case in LOCK_CASES:
        if case in bb and case in tt:
            print('  %-58s %8.2f -> %8.2f' % (tt[case][2][:58], bb[case][1], tt[case][1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--base', help='git revision without elision (default: the parent '
                    'of the commit that added stm/rtm.c)')
    ap.add_argument('--no-callgrind', action='store_true')
    a = ap.parse_args()
    build(ROOT)
    tmp = tempfile.mkdtemp(prefix='elision.')
    try:
        state = rtm_state(tmp)
        print('1. STM_RTM=auto on this machine: %s' % state)
        if state.startswith('off:'):
            print('   RTM is not available: "auto" runs the same code as "off" (the '
                  'disabled check before each lock),\n   so the timings below differ '
                  'by noise only; section 4 gives the fallback cost.')
        report_timed(timed(a.rounds, a.threads), a.threads)
        report_barriers()
        if a.no_callgrind or not shutil.which('valgrind'):
            print('\n4. skipped (no valgrind or --no-callgrind)')
            return
        rev = a.base or run(['git', 'log', '--format=%H', '--diff-filter=A', '--',
                             'stm/rtm.c']).split()[-1] + '^'
        rev = run(['git', 'rev-parse', rev]).strip()
        base_tree = os.path.join(tmp, 'base')
        os.mkdir(base_tree)
        archive = subprocess.run(['git', 'archive', rev], cwd=ROOT, stdout=subprocess.PIPE,
                                 check=True).stdout
        subprocess.run(['tar', '-x', '-C', base_tree], input=archive, check=True)
        build(base_tree)
        report_callgrind(base_tree, rev, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
