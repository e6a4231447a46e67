#!/usr/bin/env bash
# Start the head node of a hand-made Ray cluster for invae-sweep (no autoscaler).
#
# Usage: scripts/start-head.sh [--port PORT] [--num-gpus N] [--num-cpus N]
#                              [--storage PATH_OR_URI] [--dashboard-host HOST] [--block]
#
#   --port PORT            GCS port that workers and drivers connect to (env RAY_PORT; default 6379)
#   --num-gpus N           GPUs this node offers to trials (env NUM_GPUS; default: Ray counts them).
#                          --num-gpus 0 --num-cpus 0 keeps trials off the head.
#   --num-cpus N           CPUs this node offers to trials (env NUM_CPUS; default: Ray counts them)
#   --storage PATH_OR_URI  the sweep storage (env INVAE_STORAGE): a filesystem mounted at the same
#                          path on every node (NFS, EFS, Lustre) or a cloud URI (s3://bucket/path).
#                          A path is checked here to exist and be writable; the driver checks that
#                          every node sees it.
#   --dashboard-host HOST  address of the dashboard and job server (env DASHBOARD_HOST; default
#                          127.0.0.1: reach it through `ssh -L 8265:localhost:8265 HEAD`; 0.0.0.0
#                          opens it to the network)
#   --block                stay in the foreground until Ray stops (for systemd, tmux, containers)
#
# Token authentication (docs/cluster.md): this script turns it on (RAY_AUTH_MODE=token) and creates
# the cluster's token in ~/.ray/auth_token if there is none (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH
# are used instead when set). Every worker and every machine that connects to the cluster by
# address needs the same token:
#   scp ~/.ray/auth_token WORKER:~/.ray/auth_token
# Set RAY_AUTH_MODE=disabled to start without authentication (trusted, isolated networks only).
#
# Needs ray[default] (dashboard, job server) in the active environment: `pip install -e .` in the
# repository installs it. Stop the node with `ray stop`.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"; }
die() { echo "start-head.sh: error: $*" >&2; exit 2; }

port="${RAY_PORT:-6379}"
num_gpus="${NUM_GPUS:-}"
num_cpus="${NUM_CPUS:-}"
storage="${INVAE_STORAGE:-}"
dashboard_host="${DASHBOARD_HOST:-127.0.0.1}"
block=false

while (($#)); do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --num-gpus) num_gpus="${2:?--num-gpus needs a value}"; shift 2 ;;
    --num-cpus) num_cpus="${2:?--num-cpus needs a value}"; shift 2 ;;
    --storage) storage="${2:?--storage needs a value}"; shift 2 ;;
    --dashboard-host) dashboard_host="${2:?--dashboard-host needs a value}"; shift 2 ;;
    --block) block=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

command -v ray >/dev/null || die "no 'ray' command: activate the environment holding invae-sweep"

# Shared storage: a path must exist and be writable here (and at the same path on every node).
if [[ -n "$storage" && "$storage" != *://* ]]; then
  [[ -d "$storage" && -w "$storage" ]] \
    || die "storage '$storage' is not a writable directory on this node (mount the shared filesystem first)"
fi

# Token authentication, on unless RAY_AUTH_MODE=disabled.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [[ "$RAY_AUTH_MODE" == token ]]; then
  if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$HOME/.ray/auth_token" ]]; then
    ray get-auth-token --generate >/dev/null # writes ~/.ray/auth_token; keep it out of logs
    chmod 600 "$HOME/.ray/auth_token"
    echo "created the cluster token $HOME/.ray/auth_token"
  fi
fi

# Determinism: read by cuBLAS at its first use; the driver also passes it to every trial.
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"

args=(start --head --port="$port" --dashboard-host="$dashboard_host")
[[ -n "$num_gpus" ]] && args+=(--num-gpus="$num_gpus")
[[ -n "$num_cpus" ]] && args+=(--num-cpus="$num_cpus")
[[ "$block" == true ]] && args+=(--block)

head_ip="$(hostname -I 2>/dev/null | awk '{print $1}')"
token_step="  (authentication disabled: no token to copy)"
if [[ "$RAY_AUTH_MODE" == token ]]; then
  if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
    token_step="  export RAY_AUTH_TOKEN=...   # the value this head uses"
  else
    token_step="  mkdir -p ~/.ray && scp ${head_ip:-HEAD}:${RAY_AUTH_TOKEN_PATH:-.ray/auth_token} ~/.ray/auth_token"
  fi
fi
cat <<EOF
Starting the Ray head on ${head_ip:-this host}:$port (auth: $RAY_AUTH_MODE).
Then, on every worker node (and on any machine that connects by address):
$token_step
  scripts/start-worker.sh ${head_ip:-HEAD_IP}:$port${storage:+ --storage $storage}
and the sweep, here on the head:
  invae-sweep --config configs/sweep.yaml --address auto --storage ${storage:-SHARED_PATH_OR_URI}
Ray CLI commands in your shells (ray status, ray job submit) need: export RAY_AUTH_MODE=$RAY_AUTH_MODE
EOF
ray "${args[@]}"
