#!/usr/bin/env bash
# Tools the tests call: promtool (Debian package prometheus) for the alert
# rules and metrics, Chromium and chromedriver for the admin page test,
# schemathesis (PyPI) for the API fuzzing test, kubernetes-validate (PyPI)
# for the Kubernetes example.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> Installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The test runs it as `python3 -m schemathesis.cli`.
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "==> Installing schemathesis (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis==4.32.5
fi
# The test runs it as `python3 -m kubernetes_validate`.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "==> Installing kubernetes-validate (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate==1.37.0
fi
