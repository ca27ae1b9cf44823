#!/usr/bin/env bash
# Start a real single-node Slurm on this machine (Debian's slurm-wlm + munge), sized from
# nproc and the free memory. Idempotent: when the local cluster is already up and its node
# is usable, it prints the state and exits 0. Needs root (it installs packages, writes
# /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd without systemd).
#
#   sudo bash slurm/local-cluster/up.sh          # start (or check) the local cluster
#   sudo bash slurm/local-cluster/down.sh        # stop it
#
# Environment:
#   NONSENSE_SLURM_MEM_FRACTION  share of MemAvailable given to Slurm (default 0.8)
#   NONSENSE_SLURM_TIMEOUT       seconds to wait for the node to become idle (default 60)
#
# It refuses to touch an /etc/slurm/slurm.conf it did not write (a real cluster's).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by nonsense_hpc slurm/local-cluster/up.sh"
TIMEOUT=${NONSENSE_SLURM_TIMEOUT:-60}
FRACTION=${NONSENSE_SLURM_MEM_FRACTION:-0.8}
LOG_DIR=/var/log/slurm

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs slurm-wlm and munge and starts daemons)"

node_state() { sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1 || true; }

usable() {
    # The controller answers and the node is usable (idle, mixed or allocated).
    scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    case "$(node_state)" in idle*|mix*|alloc*|completing*) return 0 ;; *) return 1 ;; esac
}

if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script (a real cluster?); not touching it"
fi

# 1. Packages (about 10 s on Debian 12).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
fi

# 2. Configuration, sized from this machine.
cpus=$(nproc)
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
mem_mb=$(awk -v kb="$avail_kb" -v f="$FRACTION" 'BEGIN { m = int(kb / 1024 * f); if (m < 256) m = 256; print m }')
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /run/munge
new_conf=$(mktemp)
cat >"$new_conf" <<CONF
$MARKER
# One node (this machine) named localhost; $cpus CPUs, $mem_mb MB for jobs.
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
# Start batch jobs at once (the default lets Slurm delay them up to 3 s).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Reject impossible requests at submission instead of leaving them pending for ever.
EnforcePartLimits=ALL
# Keep finished jobs visible to squeue/scontrol for 5 minutes: there is no slurmdbd (no
# sacct), and the Snakemake Slurm plugin needs MinJobAge >= 3x its first status check.
MinJobAge=300
JobRequeue=1
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# Room for the 4 jobs per core that OverSubscribe=FORCE:4 allows.
DefMemPerCPU=$(( mem_mb / (cpus * 4) ))
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
changed=1
if [ -f "$CONF" ] && cmp -s "$new_conf" "$CONF"; then changed=0; fi
# Memory drifts between runs; keep the old file when only RealMemory/DefMemPerCPU moved.
if [ "$changed" = 1 ] && [ -f "$CONF" ] \
        && diff <(grep -vE 'RealMemory|DefMemPerCPU|^# One node' "$new_conf") \
                <(grep -vE 'RealMemory|DefMemPerCPU|^# One node' "$CONF") >/dev/null; then
    changed=0
fi
if [ "$changed" = 0 ] && usable; then
    rm -f "$new_conf"
    say "already up: $(sinfo -h -o '%P %D %c cpus %m MB %T' | head -n1)"
    exit 0
fi
if [ "$changed" = 1 ]; then
    install -m 0644 "$new_conf" "$CONF"
    say "wrote $CONF ($cpus CPUs, $mem_mb MB)"
fi
rm -f "$new_conf"

# 3. munge: a random key, owned by munge.
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
mkdir -p /var/lib/munge /var/log/munge
chown munge:munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    if command -v runuser >/dev/null; then
        runuser -u munge -- /usr/sbin/munged --force
    else
        /usr/sbin/munged --force
    fi
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged did not start"
fi

# 4. Daemons: restart them when the configuration changed.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ]; then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then kill "$(cat "$pidfile")"; fi
    done
    for _ in $(seq 1 100); do
        running /run/slurmd.pid || running /run/slurmctld.pid || break
        sleep 0.1
    done
fi
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    /usr/sbin/slurmd -N localhost
fi

# 5. Wait until the node takes jobs.
deadline=$(( $(date +%s) + TIMEOUT ))
while ! usable; do
    state=$(node_state)
    case "$state" in
        down*|drain*|fail*)
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "local-cluster: error: node not usable after ${TIMEOUT}s (state: ${state:-none})" >&2
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 0.2
done
say "up: $(sinfo -h -o '%P %D %c cpus %m MB %T' | head -n1)"
