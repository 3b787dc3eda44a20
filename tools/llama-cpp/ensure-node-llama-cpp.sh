#!/usr/bin/env bash
# Prints the path of an installed node-llama-cpp package (llama.cpp's prebuilt CPU build
# with Node bindings), installing it first when missing. It is the runtime benchmark's
# speed anchor, not a dependency of any workspace, so it lives in a cache of its own:
# .cache/tools/node-llama-cpp-<version>/node_modules/node-llama-cpp.
#
# Only the plain linux-x64 CPU binary is installed: node-llama-cpp's optional packages
# for CUDA and Vulkan are hundreds of MB. Its install script is skipped: it would look
# for a GPU build and fall back to downloading llama.cpp's sources and compiling them.
# Callers load it with getLlama({ build: "never", gpu: false }). $TANDEM_NODE_LLAMA_CPP, when
# it names a package directory, is used instead. Needs the npm registry only, and only once.
# Use: NODE_LLAMA_CPP="$(tools/llama-cpp/ensure-node-llama-cpp.sh)"
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="3.22.1"
dir="$root/.cache/tools/node-llama-cpp-$version"
package="$dir/node_modules/node-llama-cpp"
binary="$dir/node_modules/@node-llama-cpp/linux-x64"

if [ -n "${TANDEM_NODE_LLAMA_CPP:-}" ] && [ -f "$TANDEM_NODE_LLAMA_CPP/package.json" ]; then
  echo "$TANDEM_NODE_LLAMA_CPP"
  exit 0
fi
if [ -f "$dir/.complete" ]; then echo "$package"; exit 0; fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "ensure-node-llama-cpp: only linux x86_64 is set up (got $(uname -s)-$(uname -m))" >&2; exit 1 ;;
esac

# A package.json of its own, so npm installs here and not into the repository's workspaces.
mkdir -p "$dir"
cat >"$dir/package.json" <<JSON
{
  "name": "tandem-node-llama-cpp-cache",
  "private": true,
  "dependencies": {
    "node-llama-cpp": "$version",
    "@node-llama-cpp/linux-x64": "$version"
  }
}
JSON
rm -f "$dir/.complete"
(
  cd "$dir"
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix "$dir" --omit=optional --ignore-scripts \
    --no-audit --no-fund --no-package-lock --loglevel=error >&2
)
[ -f "$package/package.json" ] && [ -d "$binary/bins" ] || {
  echo "ensure-node-llama-cpp: install finished without $package or $binary/bins" >&2
  exit 1
}
touch "$dir/.complete"
echo "$package"
