#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright cannot download browsers offline), with
# fonts-noto-cjk so screenshots of the Chinese pages show text instead of boxes.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  echo "[setup] Chromium is missing and cannot be installed without root: apt-get install chromium" >&2
  exit 1
fi
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "[setup] installing Chromium from Debian's packages"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
# only screenshots need the fonts: a failure here does not stop the tests
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-noto-cjk >/dev/null \
  || echo "[setup] fonts-noto-cjk not installed: screenshots will show boxes for Chinese text" >&2
