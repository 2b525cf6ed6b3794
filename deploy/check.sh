#!/usr/bin/env bash
# Validates the deployment files offline: YAML lint, the Kubernetes objects
# against the Kubernetes schemas (oldest and newest release we support),
# the KServe objects against KServe's CRDs, and the Dockerfile.
#
#   deploy/check.sh                 # KServe's CRDs from ../shared/kserve, else
#                                   # the copies in deploy/kserve/crds
#   KSERVE_CRDS=DIR deploy/check.sh # or from DIR (KServe's config/crd/full)
#
# The validators are installed from PyPI into target/deploy-venv. That the
# flags, ports and probe paths match the server is proved by
# `cargo test -p reference-server --test deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KSERVE_CRDS:-}" ]; then
  crd_args=(--crds "$KSERVE_CRDS")
elif [ -d ../shared/kserve ]; then
  crd_args=(--crds ../shared/kserve --compare ../shared/kserve)
else
  crd_args=()
fi
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! cmp -s deploy/requirements-check.txt "$venv/requirements-check.txt"; then
  echo "installing the validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements-check.txt
  cp deploy/requirements-check.txt "$venv/requirements-check.txt"
fi
echo "--> yamllint"
"$venv/bin/yamllint" --strict -c deploy/.yamllint.yaml deploy
echo "--> kubernetes-validate (strict; Kubernetes 1.30 and 1.37)"
objects=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || objects+=("$f")
done
for version in 1.30 1.37; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${objects[@]}"
  echo "${#objects[@]} files valid for Kubernetes $version"
done
echo "--> KServe objects and Dockerfile"
"$venv/bin/python" deploy/validate.py "${crd_args[@]}"
