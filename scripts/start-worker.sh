#!/usr/bin/env bash
# Join a GPU (or CPU) node to a hand-made Ray cluster started with scripts/start-head.sh.
#
# Usage: scripts/start-worker.sh HEAD_IP[:PORT] [--num-gpus N] [--num-cpus N]
#                                [--storage PATH_OR_URI] [--block]
#
#   HEAD_IP[:PORT]         the head's address (env RAY_HEAD; PORT defaults to 6379)
#   --num-gpus N           GPUs this node offers to trials (env NUM_GPUS; default: Ray counts them)
#   --num-cpus N           CPUs this node offers to trials (env NUM_CPUS; default: Ray counts them)
#   --storage PATH_OR_URI  the sweep storage (env INVAE_STORAGE): a path is checked to exist and be
#                          writable here, at the same path as on the head
#   --block                stay in the foreground until Ray stops (for systemd, tmux, containers)
#
# Token authentication (docs/cluster.md): the head's token must be on this node first, as
# ~/.ray/auth_token (default), the file named by RAY_AUTH_TOKEN_PATH, or the value of
# RAY_AUTH_TOKEN:
#   mkdir -p ~/.ray && scp HEAD:.ray/auth_token ~/.ray/auth_token
# RAY_AUTH_MODE=token is set here; export RAY_AUTH_MODE=disabled only if the head was started so.
#
# Every node should run the same Python, Ray, torch and CUDA as the others, and for bit-for-bit
# equal replicates the same GPU model (docs/cluster.md, "Determinism"). Stop with `ray stop`.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"; }
die() { echo "start-worker.sh: error: $*" >&2; exit 2; }

head="${RAY_HEAD:-}"
num_gpus="${NUM_GPUS:-}"
num_cpus="${NUM_CPUS:-}"
storage="${INVAE_STORAGE:-}"
block=false
head_given=false

while (($#)); do
  case "$1" in
    --num-gpus) num_gpus="${2:?--num-gpus needs a value}"; shift 2 ;;
    --num-cpus) num_cpus="${2:?--num-cpus needs a value}"; shift 2 ;;
    --storage) storage="${2:?--storage needs a value}"; shift 2 ;;
    --block) block=true; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ "$head_given" == false ]] || die "one head address only"; head="$1"; head_given=true; shift ;;
  esac
done

[[ -n "$head" ]] || die "give the head's address: scripts/start-worker.sh HEAD_IP[:PORT] (see --help)"
[[ "$head" == *:* ]] || head="$head:6379"
command -v ray >/dev/null || die "no 'ray' command: activate the environment holding invae-sweep"

if [[ -n "$storage" && "$storage" != *://* ]]; then
  [[ -d "$storage" && -w "$storage" ]] \
    || die "storage '$storage' is not a writable directory on this node: mount the shared filesystem at the same path as on the head"
fi

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [[ "$RAY_AUTH_MODE" == token ]]; then
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    [[ -s "$RAY_AUTH_TOKEN_PATH" ]] || die "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is missing or empty"
  elif [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "$HOME/.ray/auth_token" ]]; then
    die "no cluster token on this node: copy the head's, e.g. mkdir -p ~/.ray && scp ${head%:*}:.ray/auth_token ~/.ray/auth_token"
  fi
fi

# Determinism: read by cuBLAS at its first use; the driver also passes it to every trial.
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"

# The GPUs decide which replicates can be bit-for-bit equal: show them.
if command -v nvidia-smi >/dev/null; then
  echo "GPUs on $(hostname):"
  nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | sed 's/^/  /' || true
fi

args=(start --address="$head")
[[ -n "$num_gpus" ]] && args+=(--num-gpus="$num_gpus")
[[ -n "$num_cpus" ]] && args+=(--num-cpus="$num_cpus")
[[ "$block" == true ]] && args+=(--block)

echo "Joining the Ray cluster at $head (auth: $RAY_AUTH_MODE); check with: ray status"
ray "${args[@]}"
