#!/usr/bin/env bash
# Bring ray_cluster.yaml up for real on this machine and run a job on it:
#   an sshd on 127.0.0.1:22 that accepts a key made for this run (the local node provider
#   reaches its "nodes" over SSH), `ray up`, `ray job submit` with the cluster's token,
#   `ray job logs`, `ray down`. Everything it starts is stopped by PID on exit.
#   scripts/ray_up_local.sh [extra rayrl train overrides]   (default: a 1-step job)
# Needs root (sshd, /opt/rayrl) and Debian's openssh-server and rsync (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d /tmp/rayrl-ray-up.XXXXXX)
RAY=$REPO/.venv/bin/ray
OVERRIDES=${*:-training.num_epochs=1 training.eval_tasks=4}

if ! command -v /usr/sbin/sshd >/dev/null || ! command -v rsync >/dev/null; then
  apt-get install -y -q openssh-server rsync >/dev/null
fi
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N "" -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
chmod 700 "$WORK"
/usr/sbin/sshd -f /dev/null -h "$WORK/host_key" -o ListenAddress=127.0.0.1 -o Port=22 \
  -o PidFile="$WORK/sshd.pid" -o AuthorizedKeysFile="$WORK/authorized_keys" \
  -o PasswordAuthentication=no -o PermitRootLogin=prohibit-password -o StrictModes=no
# The cluster's setup puts its environment on root's PATH in ~/.bashrc; put it back after.
cp -p ~/.bashrc "$WORK/bashrc.saved" 2>/dev/null || touch "$WORK/bashrc.saved"
cleanup() {
  "$RAY" down -y "$WORK/cluster.yaml" >/dev/null 2>&1 || true
  [ -f "$WORK/sshd.pid" ] && kill "$(cat "$WORK/sshd.pid")" 2>/dev/null || true
  cp -p "$WORK/bashrc.saved" ~/.bashrc
}
trap cleanup EXIT

# The cluster config as committed, with this run's key.
"$REPO/.venv/bin/python" - "$WORK" <<'EOF'
import sys, yaml
work = sys.argv[1]
config = yaml.safe_load(open("ray_cluster.yaml"))
config["auth"]["ssh_private_key"] = f"{work}/client_key"
yaml.safe_dump(config, open(f"{work}/cluster.yaml", "w"))
EOF
export SSH_AUTH_SOCK=  # only this run's key
echo "== ray up"   # file_mounts' "." is the working directory: the repository
"$RAY" up -y --no-config-cache "$WORK/cluster.yaml"
echo "== ray job submit"
# Ray 2.60 clusters use token authentication: the head wrote its token to ~/.ray/auth_token
export RAY_AUTH_MODE=token
JOB=$("$RAY" job submit --address http://127.0.0.1:8265 --no-wait --working-dir /opt/rayrl -- \
  python -m rayrl.cli train jobs/math_feedback.yaml \
  checkpoint.run_dir=/opt/rayrl/runs $OVERRIDES | grep -o "raysubmit_[A-Za-z0-9]*" | head -1)
[ -n "$JOB" ] || { echo "ray job submit failed" >&2; exit 1; }
echo "job $JOB"
"$RAY" job logs --address http://127.0.0.1:8265 --follow "$JOB" | grep -v "pid=" | tail -20
STATUS=$("$RAY" job status --address http://127.0.0.1:8265 "$JOB" 2>&1 | grep -o "' succeeded\|' failed\|' was stopped" | tail -1 || true)
echo "job status:${STATUS#\'}"
echo "== ray down"
"$RAY" down -y "$WORK/cluster.yaml"
if pgrep -f /opt/rayrl/.venv/lib >/dev/null; then echo "ray down left Ray processes running" >&2; exit 1; fi
[ "$STATUS" = "' succeeded" ]
