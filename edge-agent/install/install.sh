#!/usr/bin/env bash
# Installs the Tandem edge agent on a device as one systemd service.
#   sudo edge-agent/install/install.sh [--model DIR] [--cloud HOST:PORT] [--prefix /opt/tandem] [--node PATH]
# Copies what the agent needs (its bundle, the packages it loads, the model)
# to the prefix, writes the config unless one exists, creates the service user and
# enables the unit. TANDEM_ETC_DIR / TANDEM_SYSTEMD_DIR / TANDEM_CACHE_DIR move the
# system paths (the installer test uses them).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
prefix=/opt/tandem
model="$here/models/tandem-demo"
cloud=""
user=tandem
node_path=""
etc="${TANDEM_ETC_DIR:-/etc/tandem}"
systemd="${TANDEM_SYSTEMD_DIR:-/etc/systemd/system}"
cache="${TANDEM_CACHE_DIR:-/var/cache/tandem}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --cloud) cloud="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --node) node_path="$2"; shift 2 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v node >/dev/null || { echo "install.sh: node 20 or later is required" >&2; exit 1; }
# The node the service runs. The unit sets ProtectHome=true, so a node found under a home
# directory (nvm's, say, which `sudo` can still find on the PATH) is hidden from the
# service and it could never start: refuse it, unless --node names the node to use.
if [ -n "$node_path" ]; then
  [ -x "$node_path" ] || { echo "install.sh: --node $node_path is not an executable" >&2; exit 2; }
else
  node_path="$(command -v node)"
  for path in "$node_path" "$(readlink -f "$node_path")"; do
    case "$path" in
      /home/* | /root/* | /run/user/*)
        echo "install.sh: node is $node_path (in a home directory), which the service cannot run: its unit sets ProtectHome=true." >&2
        echo "install.sh: install node 20 or later system-wide (e.g. /usr/bin/node from your distribution's or NodeSource's packages), or name the node to use with --node PATH" >&2
        exit 1
        ;;
    esac
  done
fi
[ -f "$model/config.json" ] || { echo "install.sh: --model $model has no config.json" >&2; exit 1; }

mkdir -p "$prefix" "$etc" "$cache" "$systemd"
# The agent's bundle and the few packages it loads from node_modules (npm ci builds the
# bundle), not the checkout's sources, tests or dev tools.
[ -f "$here/edge-agent/dist/bundle/program.mjs" ] || { echo "install.sh: build first (npm ci, or npm run build)" >&2; exit 1; }
node "$here/edge-agent/install/copy-agent-files.mjs" "$here" "$prefix"
mkdir -p "$prefix/models"
installed_model="$prefix/models/$(basename "$model")"
rm -rf "$installed_model"
cp -a "$model" "$installed_model"

id "$user" >/dev/null 2>&1 || useradd --system --home "$prefix" --shell /usr/sbin/nologin "$user"
chown -R "$user" "$cache"
if [ ! -f "$etc/edge.json" ]; then
  {
    printf '{\n  "model": "%s",\n' "$installed_model"
    if [ -f "$installed_model/calibration.safetensors" ]; then printf '  "calibration": "%s",\n' "$installed_model/calibration.safetensors"; fi
    if [ -n "$cloud" ]; then printf '  "cloudAddress": "%s",\n' "$cloud"; fi
    printf '  "host": "127.0.0.1",\n  "port": 50051\n}\n'
  } > "$etc/edge.json"
fi
sed -e "s#/usr/bin/node#$node_path#" -e "s#/opt/tandem#$prefix#g" -e "s#/etc/tandem#$etc#g" -e "s#/var/cache/tandem#$cache#g" -e "s#^User=tandem#User=$user#" -e "s#^Group=tandem#Group=$user#" \
  "$here/edge-agent/install/tandem-edge.service" > "$systemd/tandem-edge.service"
if [ "$systemd" = /etc/systemd/system ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now tandem-edge
  echo "tandem-edge installed and started; config: $etc/edge.json"
else
  echo "tandem-edge installed in $prefix; config: $etc/edge.json; unit: $systemd/tandem-edge.service"
  echo "start it with: node $prefix/bin/tandem-edge.mjs --config $etc/edge.json"
fi
