#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: renders deploy/k8s with kustomize and checks every
# resource with kubeconform against strict Kubernetes schemas (unknown fields, wrong types,
# missing required fields all fail).
#
#   bash scripts/k8s-validate.sh
#
# Needs Go (the tools come from the Go module proxy, pinned below, installed once into the
# cache directory) and python3. kubeconform downloads its schemas from GitHub by default, which
# CI cannot reach; the schemas are generated instead (scripts/k8s-schemas.py) from the
# Kubernetes OpenAPI definitions that ship inside kubeconform's own module (its offline test
# fixture, ~Kubernetes 1.33), whose content the Go checksum database pins.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECONFORM=v0.7.0
KUSTOMIZE=v5.7.1
# The definitions file in kubeconform's module (named by the sha256 of its original URL).
DEFINITIONS=fixtures/cache/6dc6142c64b944d783a3e783526114da8e747a14a11d8b32dd1f12e2d89a8330

command -v go >/dev/null || { echo "k8s-validate: Go is needed (golang.org/dl or apt-get install golang)"; exit 1; }
cache=${SMART_PREFETCH_CACHE:-$HOME/.cache/smart-prefetch}
tools=$cache/go-bin
mkdir -p "$tools"
install() { # name version module
  if [ ! -x "$tools/$1-$2" ]; then
    GOBIN="$tools/tmp" go install "$3@$2"
    mv "$tools/tmp/$1" "$tools/$1-$2"
  fi
}
install kubeconform "$KUBECONFORM" github.com/yannh/kubeconform/cmd/kubeconform
install kustomize "$KUSTOMIZE" sigs.k8s.io/kustomize/kustomize/v5

moddir=$(cd /tmp && go mod download -json "github.com/yannh/kubeconform@$KUBECONFORM" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/k8s-schemas.py "$moddir/$DEFINITIONS" "$work/schemas"

"$tools/kustomize-$KUSTOMIZE" build deploy/k8s > "$work/rendered.yaml"
kinds=$(grep -c '^kind:' "$work/rendered.yaml")
echo "k8s-validate: deploy/k8s renders $kinds resources"
# No -ignore-missing-schemas: a kind without a schema is an error, not a pass.
"$tools/kubeconform-$KUBECONFORM" -strict -summary -verbose \
  -schema-location "$work/schemas/{{.ResourceKind}}{{.KindSuffix}}.json" "$work/rendered.yaml"
