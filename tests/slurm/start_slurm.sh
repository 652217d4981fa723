#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine, as root, without systemd:
# munged -> slurmctld -> slurmd (node "localhost", partition "debug").
#
#   bash tests/slurm/start_slurm.sh [STATE_DIR]      # default /tmp/layersweep-slurm
#   source STATE_DIR/env                             # exports SLURM_CONF for sbatch/squeue/...
#   bash tests/slurm/stop_slurm.sh [STATE_DIR]
#
# Everything it writes (slurm.conf, munge key and socket, pid files, logs, spool) lives under
# STATE_DIR, so it never touches a system SLURM/munge and stop_slurm.sh finds every daemon by
# its pid file. Idempotent: a daemon whose pid file names a live process is left running.
#
# No accounting daemon (slurmdbd + MariaDB) is started: the Snakemake SLURM plugin is told to
# poll job states with squeue (--slurm-status-command squeue). That is fewer moving parts
# (no database to initialise, ~190 MB less to install) and squeue sees finished and failed jobs
# for MinJobAge=300 s, far more than 3x the poll interval the plugin requires.
set -euo pipefail

STATE=${1:-${LAYERSWEEP_SLURM_DIR:-/tmp/layersweep-slurm}}
STATE=$(mkdir -p "$STATE" && cd "$STATE" && pwd)
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
WAIT=${SLURM_START_TIMEOUT:-60}          # seconds allowed for each daemon to come up

log() { printf '[start_slurm] %s\n' "$*"; }
die() { printf '[start_slurm] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)."

# ---------------------------------------------------------------- packages
need_install=0
for b in munged mungekey slurmctld slurmd sbatch squeue scontrol; do
    command -v "$b" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    log "installing slurmctld slurmd munge slurm-client (apt-get)"
    # Keep apt from starting the packaged daemons (no systemd here; we run our own below).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    pkgs=(slurmctld slurmd munge slurm-client)
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale: update once if the first try fails.
    if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"$STATE/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$STATE/apt.log" 2>&1 \
            || { if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; tail -20 "$STATE/apt.log" >&2; die "apt-get install failed (log: $STATE/apt.log)"; }
    fi
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# ---------------------------------------------------------------- helpers
# alive PIDFILE EXE: the pid file names a running (non-zombie) process of binary EXE.
# Checking the binary guards against a stale pid file whose pid was reused.
alive() {
    local pidfile=$1 exe=$2 pid state
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' < "$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ "$state" != "Z" ] || return 1
    is_exe "$pid" "$exe"
}

# is_exe PID EXE: the process runs binary EXE (Debian's slurmctld is a symlink to slurmctld-wlm).
is_exe() {
    local real want
    real=$(readlink -f "/proc/$1/exe" 2>/dev/null) || return 1
    want=$(readlink -f "$(command -v "$2" 2>/dev/null || echo "/nonexistent/$2")")
    [ "$real" = "$want" ] || [ "$(basename "$real")" = "$2" ]
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s, bounded.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    log "$what: ok"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- layout
mkdir -p "$STATE"/{etc,run,log,spool/slurmctld,spool/slurmd,munge}
chmod 755 "$STATE" "$STATE"/{etc,run,log}
# munged insists that its directories belong to it and are not writable by others.
chown munge:munge "$STATE/munge"
chmod 755 "$STATE/munge"
MUNGE_SOCKET="$STATE/munge/munge.socket.2"
MUNGE_KEY="$STATE/munge/munge.key"
MUNGE_PID="$STATE/munge/munged.pid"
CONF="$STATE/etc/slurm.conf"
CTLD_PID="$STATE/run/slurmctld.pid"
SLURMD_PID="$STATE/run/slurmd.pid"
export SLURM_CONF="$CONF"
printf 'export SLURM_CONF=%q\n' "$CONF" > "$STATE/env"

# ---------------------------------------------------------------- munged
if alive "$MUNGE_PID" munged; then
    log "munged already running (pid $(cat "$MUNGE_PID"))"
else
    if [ ! -s "$MUNGE_KEY" ]; then
        runuser -u munge -- mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"; chmod 600 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
    log "starting munged"
    # --force: /tmp (a parent of the socket) is world-writable, which munged would refuse.
    runuser -u munge -- munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
fi
munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }
wait_for "$WAIT" "munge credential round trip" munge_ok \
    || die "munged did not answer within ${WAIT}s (log: $STATE/munge/munged.log)"

# ---------------------------------------------------------------- slurm.conf
# Hardware as slurmd sees it, pinned to node name "localhost" (the hostname is not localhost).
hw=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //')
cat > "$CONF.new" <<EOF
# Generated by tests/slurm/start_slurm.sh: a one-node test cluster, no accounting, no cgroups.
ClusterName=localcluster
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
# squeue keeps finished/failed jobs visible this long; the Snakemake plugin polls with squeue.
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if alive "$CTLD_PID" slurmctld && [ -s "$CONF" ]; then
    rm -f "$CONF.new"            # keep the configuration the running controller was started with
else
    mv -f "$CONF.new" "$CONF"
fi

# The Snakemake jobstep plugin strips SLURM_* (SLURM_CONF included) from the environment of the
# `srun` it runs inside each job, so that srun only finds the compiled-in default path.
# Link it to this cluster's file; never replace a real (non-symlink) system configuration.
SYS_CONF=/etc/slurm/slurm.conf
if [ -e "$SYS_CONF" ] && [ ! -L "$SYS_CONF" ]; then
    die "$SYS_CONF is a real SLURM configuration; this test cluster would need to replace it (srun inside jobs reads only that path)."
fi
if [ "$(readlink "$SYS_CONF" 2>/dev/null)" != "$CONF" ]; then
    if [ -L "$SYS_CONF" ] && alive "$(dirname "$(dirname "$(readlink "$SYS_CONF")")")/run/slurmctld.pid" slurmctld; then
        die "$SYS_CONF points at another running test cluster ($(readlink "$SYS_CONF")); stop it first."
    fi
    mkdir -p "$(dirname "$SYS_CONF")"
    ln -sfn "$CONF" "$SYS_CONF"
    log "linked $SYS_CONF -> $CONF"
fi

# ---------------------------------------------------------------- slurmctld
ctld_up() { scontrol ping | grep -q 'is UP'; }
if alive "$CTLD_PID" slurmctld; then
    log "slurmctld already running (pid $(cat "$CTLD_PID"))"
else
    port_free "$CTLD_PORT" || die "port $CTLD_PORT is taken by another process (another slurmctld?); set SLURMCTLD_PORT."
    log "starting slurmctld"
    # -c: forget jobs of an earlier run of this test cluster (it is disposable).
    slurmctld -c -f "$CONF"
fi
wait_for "$WAIT" "slurmctld ping" ctld_up \
    || die "slurmctld is not UP after ${WAIT}s (log: $STATE/log/slurmctld.log)"

# ---------------------------------------------------------------- slurmd
if alive "$SLURMD_PID" slurmd; then
    log "slurmd already running (pid $(cat "$SLURMD_PID"))"
else
    port_free "$SLURMD_PORT" || die "port $SLURMD_PORT is taken by another process (another slurmd?); set SLURMD_PORT."
    log "starting slurmd -N localhost"
    slurmd -f "$CONF" -N localhost
fi
node_state() { sinfo -h -N -n localhost -o %t 2>/dev/null | head -1; }
node_idle() { case "$(node_state)" in idle|mix|alloc) return 0;; *) return 1;; esac; }
if ! wait_for "$WAIT" "node localhost idle" node_idle; then
    # A node left down/drained by an earlier run: return it to service once, then wait again.
    log "node state is '$(node_state)'; resuming it"
    scontrol update NodeName=localhost State=RESUME 2>/dev/null || true
    wait_for 20 "node localhost idle after resume" node_idle \
        || die "node localhost is '$(node_state)', not idle (log: $STATE/log/slurmd.log)"
fi
log "cluster up: state in $STATE; run 'source $STATE/env' before sbatch/squeue"
