#!/usr/bin/env bash
# Integration test on a real one-node SLURM cluster (started here, stopped on exit):
#   1. the demo DAG (config/demo.yaml with the overlay two-methods.yaml: two methods, two shards each)
#      runs locally in one fresh copy of the repo (the reference);
#   2. in a second copy it runs with --workflow-profile profiles/slurm --executor slurm, and one
#      RUNNING attribution job is scancel'ed mid-way: Snakemake must report it as failed (run 1);
#      the rerun (run 2) must finish and must not recompute any file that run 1 had finished;
#   3. every job except the localrules must have gone through sbatch (SLURM log per job);
#   4. the resumed SLURM outputs must equal the local ones: results/**/*.parquet (pandas, 1e-6),
#      results/**/*.npz and *.npy arrays (np.allclose, 1e-6), figures/tables/*.csv (pandas, 1e-6).
# Prints one PASS/FAIL line per check and the wall time; exits 1 if any check failed.
#
#   bash tests/slurm/run_slurm_test.sh          (or: make test-slurm)
# Environment: SLURM_TEST_TIMEOUT (s per snakemake run, default 1800), SLURM_TEST_KEEP=1 keeps the
# work directory, LAYERSWEEP_SLURM_DIR (cluster state, default /tmp/layersweep-slurm).
#
# The local cluster has no GPU and 2 CPUs, so the SLURM runs add `--config device=cpu` (the rules'
# `gpu` resource is 0 then: no --gpus asked of sbatch), `--max-threads 2` (rules ask for up to
# 4 threads = --cpus-per-task) and `--cores 2` (a group job asks for the threads of its members
# that can run in parallel, summed: 3 for the "summaries" group, which a 2-CPU node never
# schedules; --cores caps that sum). There is no accounting daemon, so job states are polled
# with squeue (--slurm-status-command squeue); see start_slurm.sh.
# Columns of wall-clock timings (history.parquet's "seconds") differ between any two runs and
# are left out of the comparison.
set -uo pipefail

T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV_BIN="$REPO/.venv/bin"
PY="$VENV_BIN/python"
STATE=${LAYERSWEEP_SLURM_DIR:-/tmp/layersweep-slurm}
TIMEOUT=${SLURM_TEST_TIMEOUT:-1800}
WORK=$(mktemp -d /tmp/layersweep-slurmtest.XXXXXX)
FAILED=0
N_PASS=0
N_FAIL=0
BG_PIDS=()

say() { printf '[slurm-test] %s\n' "$*"; }
pass() { printf 'PASS: %s\n' "$*"; N_PASS=$((N_PASS + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=1; N_FAIL=$((N_FAIL + 1)); }

cleanup() {
    local rc=$?
    trap - INT TERM
    # our background children only, by pid: the squeue recorder and any `timeout` still running
    # (timeout passes the TERM on to snakemake, which cancels its SLURM jobs)
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    bash "$HERE/stop_slurm.sh" "$STATE" || say "stop_slurm.sh reported a daemon still alive"
    if [ "$FAILED" -eq 0 ] && [ "$rc" -eq 0 ] && [ "${SLURM_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        say "work directory kept: $WORK"
    fi
    say "wall time: $(( $(date +%s) - T0 )) s"
    printf 'slurm: %d passed, %d failed\n' "$N_PASS" "$N_FAIL"  # the closing line CI reads
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # so that an interrupted test still stops the cluster

[ -x "$PY" ] || { fail "no venv at $REPO/.venv (run make first)"; exit 1; }
bash "$HERE/start_slurm.sh" "$STATE" || { fail "SLURM did not start"; exit 1; }
# shellcheck disable=SC1091
source "$STATE/env"
export PATH="$VENV_BIN:$PATH"          # the jobs run `python -m snakemake` inside sbatch

# run_in DIR LOG CMD...: CMD in DIR under `timeout`, output to LOG; returns CMD's status.
# Run in the background and waited for, so that an INT/TERM reaches the trap at once.
run_in() {
    local dir=$1 log=$2; shift 2
    (cd "$dir" && exec timeout -k 30 "$TIMEOUT" "$@" > "$log" 2>&1) &
    local pid=$!
    BG_PIDS+=("$pid")
    wait "$pid"
}

# ---- two fresh copies of the repository's files (tracked, plus new files git does not ignore)
copy_repo() {
    mkdir -p "$1"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$1")
}
copy_repo "$WORK/local"
copy_repo "$WORK/slurm"
say "repo copied to $WORK/local and $WORK/slurm ($(cd "$REPO" && git ls-files --cached --others --exclude-standard | wc -l) files)"

# Rule names that must not go through SLURM: the Snakefile's `localrules:` line.
LOCALRULES=$(sed -n 's/^localrules:\s*//p' "$REPO/Snakefile" | tr -d ' ' | tr ',' ' ')

# The demo's config, cut down to two methods in two shards (the demo runs every method; see two-methods.yaml)
CONFIGS=(config/demo.yaml tests/slurm/two-methods.yaml)
for copy in "$WORK/local" "$WORK/slurm"; do
    [ -f "$copy/${CONFIGS[1]}" ] || { fail "${CONFIGS[1]} was not copied to $copy"; exit 1; }
done

# ---- 1. reference: the demo DAG on this machine (README's command)
say "local run: snakemake --cores 2 --configfile ${CONFIGS[*]}"
t=$(date +%s)
if run_in "$WORK/local" "$WORK/local.log" "$VENV_BIN/snakemake" --cores 2 --configfile "${CONFIGS[@]}"; then
    pass "local demo run finished in $(( $(date +%s) - t )) s"
else
    fail "local demo run failed (log: $WORK/local.log)"; tail -30 "$WORK/local.log"; exit 1
fi

# ---- 2. SLURM run 1 (one attribution job cancelled), then run 2 (resume)
SMK=("$VENV_BIN/snakemake" --workflow-profile profiles/slurm --executor slurm
     --configfile "${CONFIGS[@]}" --config device=cpu --max-threads 2 --cores 2
     --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2
     --slurm-keep-successful-logs)

# Record every job SLURM knows (squeue keeps finished ones for MinJobAge=300 s): id, comment
# (rule_<rule>_wildcards_<...>), CPUs, memory, time limit, state.
( while :; do squeue --states=all -h -o '%i|%k|%C|%m|%l|%T' >> "$WORK/squeue.txt" 2>/dev/null; sleep 3; done ) &
BG_PIDS+=($!)

say "SLURM run 1 (--retries 0, one attribution job will be cancelled)"
t=$(date +%s)
(cd "$WORK/slurm" && exec timeout -k 30 "$TIMEOUT" "${SMK[@]}" --retries 0 > "$WORK/slurm-run1.log" 2>&1) &
RUN1=$!
BG_PIDS+=("$RUN1")
cancelled=""
deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$RUN1" 2>/dev/null && [ -z "$cancelled" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    # the first attribution job that has been RUNNING for at least 2 s: cancel it mid-way
    job=$(squeue -h -t RUNNING -o '%i|%k|%M' | awk -F'|' '$2 ~ /^rule_attribution_/ {
              n = split($3, a, ":"); s = a[n] + 60 * a[n-1]; if (s >= 2) { print $1 "|" $2; exit } }')
    if [ -n "$job" ]; then
        id=${job%%|*}
        scancel "$id"
        sleep 1
        st=$(squeue -h --states=all -j "$id" -o %T 2>/dev/null)
        if [ "$st" = CANCELLED ]; then
            cancelled=$id
            say "cancelled SLURM job $id (${job#*|}) while it was running"
        else
            say "job $id ended as '$st' before scancel took effect; trying the next one"
        fi
    fi
    sleep 1
done
wait "$RUN1"; rc1=$?
say "SLURM run 1 exited with $rc1 after $(( $(date +%s) - t )) s"
if [ -z "$cancelled" ]; then
    fail "no RUNNING attribution job was seen to cancel (log: $WORK/slurm-run1.log)"
elif [ "$rc1" -ne 0 ] && grep -q "SLURM-job '$cancelled' failed, SLURM status is: 'CANCELLED'" "$WORK/slurm-run1.log" \
        && grep -q "Error in rule attribution" "$WORK/slurm-run1.log"; then
    pass "snakemake reported the cancelled job $cancelled as failed (exit $rc1)"
else
    fail "snakemake did not report the cancelled job $cancelled as failed (exit $rc1, log: $WORK/slurm-run1.log)"
    tail -30 "$WORK/slurm-run1.log"
fi

# every file run 1 finished, with its mtime in ns
snapshot() {
    (cd "$WORK/slurm" && "$PY" -c '
import os, sys, json
out = {}
for top in ("results", "figures"):
    for d, _, fs in os.walk(top):
        for f in fs:
            p = os.path.join(d, f)
            out[p] = os.stat(p).st_mtime_ns
json.dump(out, sys.stdout, indent=0, sort_keys=True)')
}
snapshot > "$WORK/after-run1.json"

say "SLURM run 2 (resume)"
t=$(date +%s)
if run_in "$WORK/slurm" "$WORK/slurm-run2.log" "${SMK[@]}"; then
    pass "SLURM run 2 (resume) finished in $(( $(date +%s) - t )) s"
else
    fail "SLURM run 2 (resume) failed (log: $WORK/slurm-run2.log)"; tail -30 "$WORK/slurm-run2.log"
fi
snapshot > "$WORK/after-run2.json"
kill "${BG_PIDS[0]}" 2>/dev/null

# ---- resume: nothing finished in run 1 was recomputed; the cancelled shard was
"$PY" - "$WORK" <<'EOF' || FAILED=1
import json, re, sys
work = sys.argv[1]
a = json.load(open(f"{work}/after-run1.json"))
b = json.load(open(f"{work}/after-run2.json"))
shards = sorted(p for p in a if re.match(r"results/(attributions|metrics)/", p))
touched = [p for p in a if p in b and b[p] != a[p]]
new = sorted(set(b) - set(a))
new_attr = [p for p in new if p.startswith("results/attributions/")]
print(f"[slurm-test] run 1 left {len(a)} files ({len(shards)} attribution/metric shards); run 2 added {len(new)}, rewrote {len(touched)}")
ok = True
if touched:
    print("FAIL: resume recomputed files that run 1 had finished: " + ", ".join(sorted(touched)[:10])); ok = False
elif not shards:
    print("FAIL: run 1 finished no attribution/metric shard, so the resume check proves nothing"); ok = False
else:
    print(f"PASS: resume kept all {len(a)} files of run 1 untouched (mtimes equal), {len(shards)} of them shards")
if len(new_attr) != 1:
    print(f"FAIL: run 2 should add exactly the cancelled attribution shard, added {new_attr}"); ok = False
else:
    print(f"PASS: run 2 computed the cancelled shard {new_attr[0]}")
sys.exit(0 if ok else 1)
EOF

# ---- 3. the jobs went through sbatch
n_logs=$(find "$WORK/slurm/logs/slurm" -name '*.log' -type f 2>/dev/null | wc -l)
n_sub=$(cat "$WORK/slurm-run1.log" "$WORK/slurm-run2.log" | grep -c 'has been submitted with SLURM jobid')
n_sub2=$(grep -c 'has been submitted with SLURM jobid' "$WORK/slurm-run2.log")
say "SLURM jobs: $n_sub submitted ($n_sub2 in the resume), $n_logs SLURM log files in logs/slurm/"
# rules Snakemake ran on this host instead of submitting ("localrule <name>:")
local_ran=$(cat "$WORK/slurm-run1.log" "$WORK/slurm-run2.log" | sed -n 's/^localrule \([A-Za-z0-9_]*\):.*/\1/p' | sort -u | tr '\n' ' ')
stray=""
for r in $local_ran; do case " $LOCALRULES " in *" $r "*) ;; *) stray="$stray $r";; esac; done
if [ "$n_sub" -gt 0 ] && [ "$n_logs" -eq "$n_sub" ] && [ -z "$stray" ]; then
    pass "all $n_sub non-local jobs went through sbatch (one SLURM log each); ran locally: ${local_ran:-none}"
else
    fail "sbatch jobs: $n_sub submitted, $n_logs SLURM logs; rules run locally that are not localrules:${stray:- none}"
fi
# what SLURM was asked for, per rule (from squeue): CPUs, memory, time limit, final states
"$PY" - "$WORK/squeue.txt" "$WORK/slurm-run1.log" "$WORK/slurm-run2.log" <<'EOF' || FAILED=1
import collections, re, sys
ours = set()
for log in sys.argv[2:]:
    ours |= set(re.findall(r"has been submitted with SLURM jobid (\d+)", open(log).read()))
last = {}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("|")
    if len(parts) == 6 and parts[0] in ours:
        last[parts[0]] = parts
rows = collections.defaultdict(list)
for jid, comment, cpus, mem, limit, state in last.values():
    rule = re.sub(r"_wildcards_.*$", "", comment)[len("rule_"):]
    rows[rule].append((cpus, mem, limit, state))
print(f"[slurm-test] {'rule':<20} {'jobs':>4}  cpus  mem      time-limit  states")
for rule, rs in sorted(rows.items()):
    states = collections.Counter(r[3] for r in rs)
    print(f"[slurm-test] {rule:<20} {len(rs):>4}  {','.join(sorted({r[0] for r in rs})):<5} "
          f"{','.join(sorted({r[1] for r in rs})):<8} {','.join(sorted({r[2] for r in rs})):<11} "
          + ", ".join(f"{k} x{v}" for k, v in sorted(states.items())))
no_limit = [j for j, p in last.items() if p[4] in ("UNLIMITED", "INVALID") or p[3] in ("0", "")]
if not last or set(last) != ours:
    print(f"FAIL: squeue saw {len(last)} of the {len(ours)} submitted jobs; missing {sorted(ours - set(last))[:10]}"); sys.exit(1)
if no_limit:
    print(f"FAIL: jobs without a time limit or memory request: {no_limit}"); sys.exit(1)
print(f"PASS: all {len(last)} SLURM jobs seen by squeue carried a memory request and a time limit")
EOF

# ---- 4. outputs: SLURM (resumed) == local
"$PY" - "$WORK/local" "$WORK/slurm" <<'EOF' || FAILED=1
import glob, os, sys
import numpy as np
import pandas as pd

ref, got = sys.argv[1], sys.argv[2]
TOL = dict(rtol=1e-6, atol=1e-6)
ok = True

def rel(root, pattern):
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern), recursive=True))

TIMING_COLUMNS = {"seconds"}  # wall-clock time of a training epoch: differs between any two runs

def frames_equal(a, b):
    a = a.drop(columns=[c for c in a.columns if c in TIMING_COLUMNS])
    b = b.drop(columns=[c for c in b.columns if c in TIMING_COLUMNS])
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=False, **TOL)
        return None
    except AssertionError as e:
        return str(e).splitlines()[0:3]

def arrays_equal(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    if a.dtype.kind in "fc":
        if not np.allclose(a, b, equal_nan=True, **TOL):
            return f"max |diff| {np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))}"
    elif not np.array_equal(a, b):
        return "values differ"
    return None

for kind, pattern, required in [("parquet", "results/**/*.parquet", True), ("npz", "results/**/*.npz", True),
                                ("npy", "results/**/*.npy", False), ("figure table csv", "figures/tables/*.csv", True)]:
    a, b = rel(ref, pattern), rel(got, pattern)
    bad = []
    if a != b:
        bad.append(f"file sets differ: only local {sorted(set(a) - set(b))[:5]}, only SLURM {sorted(set(b) - set(a))[:5]}")
    for f in sorted(set(a) & set(b)):
        pa, pb = os.path.join(ref, f), os.path.join(got, f)
        if kind == "parquet":
            err = frames_equal(pd.read_parquet(pa), pd.read_parquet(pb))
        elif kind == "figure table csv":
            err = frames_equal(pd.read_csv(pa), pd.read_csv(pb))
        elif kind == "npy":
            err = arrays_equal(np.load(pa), np.load(pb))
        else:
            with np.load(pa) as za, np.load(pb) as zb:
                if sorted(za.files) != sorted(zb.files):
                    err = f"keys {sorted(za.files)} vs {sorted(zb.files)}"
                else:
                    errs = [f"{k}: {e}" for k in za.files if (e := arrays_equal(za[k], zb[k]))]
                    err = "; ".join(errs) or None
        if err:
            bad.append(f"{f}: {err}")
    if not a and not b:
        if required:
            bad.append("no such file in either run")
        else:
            continue
    if bad:
        ok = False
        print(f"FAIL: {kind}: {len(bad)} mismatches: " + " | ".join(map(str, bad[:5])))
    else:
        print(f"PASS: {kind}: {len(a)} files equal (SLURM vs local, rtol=atol=1e-6)")
sys.exit(0 if ok else 1)
EOF

if [ "$FAILED" -eq 0 ]; then
    say "ALL PASS ($n_sub SLURM jobs)"
else
    say "SOME CHECKS FAILED"
fi
exit "$FAILED"
