#!/usr/bin/env bash
# Installs the Debian packages the project uses when any is missing (called by `make setup`).
# Where it cannot (no apt, not root and no passwordless sudo), it stops with the exact command to run.
set -euo pipefail

PACKAGES=(redis-server chromium chromium-driver wrk prometheus prometheus-alertmanager)
WHY="redis-server: the Redis online/serving store tests; chromium + chromium-driver: the demo page's browser test; wrk: the serving benchmark; prometheus + prometheus-alertmanager: make observe and the tests of the dashboards and alerts"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${PACKAGES[@]}"; do installed "$pkg" || missing+=("$pkg"); done
else
  missing=("${PACKAGES[@]}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

command_line="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "make setup: missing system packages ${missing[*]} ($WHY), and there is no apt-get here." >&2
  echo "Install their equivalents with your package manager, then run make again." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "make setup: missing system packages ${missing[*]} ($WHY)." >&2
  echo "Install them, then run make again:  sudo sh -c '$command_line'" >&2
  exit 1
fi
echo "make setup: installing Debian packages ${missing[*]} ($WHY)"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  > /dev/null 2> >(grep -v "^debconf: delaying" >&2)
