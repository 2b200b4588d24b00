#!/usr/bin/env bash
# Set up matchsig on a fresh machine: a virtual environment in .venv with the CPU build of torch
# 2.13.0 (pinned first: any other torch spec may pull a multi-GB CUDA build) and the package with its
# test extras. `--browser` also installs Debian's chromium + chromium-driver for the explorer tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: no apt-get; install chromium and chromium-driver yourself for the browser tests" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
