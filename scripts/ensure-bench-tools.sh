#!/usr/bin/env bash
# The reference clients the benchmark compares against: Debian's rclone and
# the AWS CLI from PyPI; /usr/bin/time for peak memory.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v rclone >/dev/null || missing+=(rclone)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> Installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v aws >/dev/null || python3 -m pip install --quiet awscli
