#!/usr/bin/env bash
# Stop the local single-node Slurm started by up.sh: cancel its jobs, stop slurmd,
# slurmctld and munged. Idempotent: nothing running is fine. Leaves the packages and
# /etc/slurm/slurm.conf in place (up.sh reuses them); --purge also removes the saved
# controller state and the configuration.
set -euo pipefail

MARKER="# written by nonsense_hpc slurm/local-cluster/up.sh"
CONF=/etc/slurm/slurm.conf
say() { echo "local-cluster: $*"; }

[ "$(id -u)" = 0 ] || { echo "local-cluster: error: must run as root" >&2; exit 1; }
if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    echo "local-cluster: error: $CONF was not written by up.sh (a real cluster?); not touching it" >&2
    exit 1
fi

if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    scancel --user=root >/dev/null 2>&1 || true
fi

stop() {  # stop NAME PIDFILE
    local pid
    [ -f "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $1"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$2"
}
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid

if [ "${1:-}" = "--purge" ]; then
    rm -rf /var/spool/slurmctld /var/spool/slurmd "$CONF"
    say "purged state and configuration"
fi
say "down"
