#!/usr/bin/env bash
# Stop the test cluster started by start_slurm.sh: cancel its jobs, then stop slurmd, slurmctld
# and munged, each found by the pid file under STATE_DIR (never by process name).
#
#   bash tests/slurm/stop_slurm.sh [STATE_DIR]      # default /tmp/layersweep-slurm
#
# A process in state Z (a zombie nobody reaps, common in containers) counts as stopped.
# Every wait is bounded: SIGTERM, up to STOP_TIMEOUT s, then SIGKILL, up to 10 s more.
# Exits 0 when every daemon is gone (or was not running), 1 otherwise.
set -uo pipefail

STATE=${1:-${LAYERSWEEP_SLURM_DIR:-/tmp/layersweep-slurm}}
TIMEOUT=${STOP_TIMEOUT:-20}

log() { printf '[stop_slurm] %s\n' "$*"; }

if [ ! -d "$STATE" ]; then
    log "no state directory $STATE: nothing to stop"
    exit 0
fi
STATE=$(cd "$STATE" && pwd)
export SLURM_CONF="$STATE/etc/slurm.conf"

pid_of() { [ -s "$1" ] && tr -dc '0-9' < "$1"; }

# gone PID: no such process, or a zombie.
gone() {
    local pid=$1
    [ -r "/proc/$pid/status" ] || return 0
    [ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" = "Z" ]
}

# is_exe PID EXE: the process runs binary EXE (a stale pid file may name a reused pid).
# Debian's slurmctld/slurmd are symlinks to slurmctld-wlm/slurmd-wlm: compare resolved paths.
is_exe() {
    local real want
    real=$(readlink -f "/proc/$1/exe" 2>/dev/null) || return 1
    want=$(readlink -f "$(command -v "$2" 2>/dev/null || echo "/nonexistent/$2")")
    [ "$real" = "$want" ] || [ "$(basename "$real")" = "$2" ]
}

wait_gone() {
    local pid=$1 secs=$2 deadline=$(( $(date +%s) + $2 ))
    until gone "$pid"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

status=0
# stop_daemon NAME PIDFILE EXE
stop_daemon() {
    local name=$1 pidfile=$2 exe=$3 pid
    pid=$(pid_of "$pidfile") || pid=""
    if [ -z "$pid" ]; then
        log "$name: no pid file, not running"
        return
    fi
    if gone "$pid"; then
        log "$name: pid $pid already gone"
    elif ! is_exe "$pid" "$exe"; then
        log "$name: pid $pid is not $exe any more (stale pid file); leaving it alone"
    else
        kill -TERM "$pid" 2>/dev/null || true
        if wait_gone "$pid" "$TIMEOUT"; then
            log "$name: stopped (pid $pid)"
        else
            log "$name: pid $pid ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            if wait_gone "$pid" 10; then
                log "$name: killed (pid $pid)"
            else
                log "$name: pid $pid still alive"; status=1; return
            fi
        fi
    fi
    rm -f "$pidfile"
}

# Cancel this cluster's jobs first: with proctrack/linuxproc a job's processes would outlive slurmd.
ctld_pid=$(pid_of "$STATE/run/slurmctld.pid") || ctld_pid=""
if [ -n "$ctld_pid" ] && ! gone "$ctld_pid" && is_exe "$ctld_pid" slurmctld; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        deadline=$(( $(date +%s) + TIMEOUT ))
        while [ -n "$(timeout 10 squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING -o %A 2>/dev/null)" ]; do
            if [ "$(date +%s)" -ge "$deadline" ]; then log "jobs still running after ${TIMEOUT}s"; break; fi
            sleep 0.5
        done
    fi
fi

stop_daemon slurmd "$STATE/run/slurmd.pid" slurmd
stop_daemon slurmctld "$STATE/run/slurmctld.pid" slurmctld
stop_daemon munged "$STATE/munge/munged.pid" munged
# Remove the /etc/slurm/slurm.conf link start_slurm.sh made, if it still points at this cluster.
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/etc/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf && log "removed the /etc/slurm/slurm.conf link"
fi
exit "$status"
