#!/usr/bin/env bash
# Installs the Tandem edge agent on a device as one systemd service.
#   sudo edge-agent/install/install.sh [--model DIR] [--cloud HOST:PORT] [--prefix /opt/tandem]
# Copies the repository (with its node_modules) to the prefix, writes /etc/tandem/edge.json
# unless it exists, creates the tandem user and enables the service.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
prefix=/opt/tandem
model=""
cloud=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --cloud) cloud="$2"; shift 2 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v node >/dev/null || { echo "install.sh: node (20 or later) is required" >&2; exit 1; }
[ -d "$here/node_modules" ] || (cd "$here" && npm ci --omit=dev)
id tandem >/dev/null 2>&1 || useradd --system --home "$prefix" --shell /usr/sbin/nologin tandem
mkdir -p "$prefix" /etc/tandem /var/cache/tandem
cp -a "$here/." "$prefix/"
chown -R tandem:tandem /var/cache/tandem
model="${model:-$prefix/models/tandem-demo}"
if [ ! -f /etc/tandem/edge.json ]; then
  {
    printf '{\n  "model": "%s",\n' "$model"
    [ -f "$model/calibration.safetensors" ] && printf '  "calibration": "%s",\n' "$model/calibration.safetensors"
    [ -n "$cloud" ] && printf '  "cloudAddress": "%s",\n' "$cloud"
    printf '  "host": "127.0.0.1",\n  "port": 50051\n}\n'
  } > /etc/tandem/edge.json
fi
install -m 0644 "$here/edge-agent/install/tandem-edge.service" /etc/systemd/system/tandem-edge.service
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now tandem-edge
  echo "tandem-edge installed and started; config: /etc/tandem/edge.json"
else
  echo "tandem-edge installed; systemd is not running here, start it with:"
  echo "  sudo -u tandem node $prefix/bin/tandem-edge.mjs --config /etc/tandem/edge.json"
fi
