#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing the SLURM profile for real.
#
#   scripts/slurm_cluster.sh start    install slurm-wlm + munge if missing, write the config,
#                                     start munged, slurmctld and slurmd, wait for the node idle
#   scripts/slurm_cluster.sh stop     stop the daemons this script started (by their PID files)
#   scripts/slurm_cluster.sh status   print sinfo
#
# Needs root (or passwordless sudo): it writes /etc/slurm/slurm.conf, because the executor
# plugin's job step drops SLURM_CONF and slurmstepd then finds no configuration elsewhere.
# No accounting daemon runs, so Snakemake profiles must poll job states with squeue.
# SLURM_LOCAL_DIR (default /tmp/slurm-local) holds state, logs and PID files.
set -euo pipefail

STATE_DIR="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by scripts/slurm_cluster.sh"
START_TIMEOUT_S="${SLURM_LOCAL_START_TIMEOUT_S:-60}"
# munged runs as user munge, which may not enter STATE_DIR (e.g. a 0700 temporary directory).
MUNGE_PID_FILE=/run/munge/slurm_cluster-munged.pid

if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
else
  as_root() { sudo -n "$@"; }
fi

die() {
  echo "slurm_cluster: $*" >&2
  exit 1
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  echo "slurm_cluster: installing slurm-wlm and munge with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
    || die "apt-get could not install slurm-wlm and munge"
}

write_config() {
  local host cpus mem_mb
  host="$(hostname -s)"
  cpus="$(nproc)"
  # Leave a tenth of the memory to the daemons and the submitting Snakemake process.
  mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
  fi
  as_root mkdir -p /etc/slurm "$STATE_DIR/ctld" "$STATE_DIR/spool"
  as_root tee "$CONF" >/dev/null <<EOF
$MARKER
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

# pid_alive PID_FILE NAME: the file names a live process called NAME. Checking the name keeps
# a stale PID file, whose number the system has since reused, from pointing at a stranger.
pid_alive() {
  [ -f "$1" ] && [ "$(ps -p "$(cat "$1")" -o comm= 2>/dev/null)" = "$2" ]
}

start_munge() {
  # A munged that already answers (e.g. the system's) is used as it is, and never stopped here.
  if pid_alive "$MUNGE_PID_FILE" munged || munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    as_root mkdir -p /etc/munge
    as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  as_root mkdir -p /run/munge /var/lib/munge /var/log/munge
  as_root chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  as_root chmod 400 /etc/munge/munge.key
  as_root runuser -u munge -- munged --pid-file="$MUNGE_PID_FILE" \
    || die "munged did not start; see /var/log/munge/munged.log"
}

wait_for_idle() {
  local host deadline state
  host="$(hostname -s)"
  deadline=$((SECONDS + START_TIMEOUT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    if [ "$state" = "idle" ]; then
      return
    fi
    sleep 0.5
  done
  die "node $host not idle after ${START_TIMEOUT_S}s (sinfo state: '${state:-none}'); see $STATE_DIR/*.log"
}

start() {
  install_packages
  as_root mkdir -p "$STATE_DIR"
  write_config
  start_munge
  pid_alive "$STATE_DIR/slurmctld.pid" slurmctld || as_root slurmctld || die "slurmctld did not start; see $STATE_DIR/slurmctld.log"
  pid_alive "$STATE_DIR/slurmd.pid" slurmd || as_root slurmd || die "slurmd did not start; see $STATE_DIR/slurmd.log"
  wait_for_idle
  echo "slurm_cluster: node $(hostname -s) idle; state in $STATE_DIR"
}

stop_daemon() {
  local pid_file="$1" name="$2" pid
  pid_alive "$pid_file" "$name" || return 0
  pid="$(cat "$pid_file")"
  as_root kill "$pid"
  for _ in $(seq 50); do
    ps -p "$pid" >/dev/null 2>&1 || return 0
    sleep 0.2
  done
  as_root kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  # Cancel leftover jobs first so that no job step outlives the cluster.
  if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld; then
    as_root scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  fi
  stop_daemon "$STATE_DIR/slurmd.pid" slurmd
  stop_daemon "$STATE_DIR/slurmctld.pid" slurmctld
  stop_daemon "$MUNGE_PID_FILE" munged
  echo "slurm_cluster: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) die "usage: $0 start|stop|status" ;;
esac
