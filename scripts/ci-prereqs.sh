#!/usr/bin/env bash
# Installs what some tests need beyond npm packages: Debian's Chromium at /usr/bin/chromium for
# the browser test (driven by playwright-core, which never downloads a browser of its own).
# Idempotent and quiet: does nothing when Chromium is there; runs apt-get update only to
# install. Tests that need a missing prerequisite say so and fail; run this first (CI does).
set -u
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null &&
      apt-get install -y -qq chromium >/dev/null ||
      echo "apt-get could not install chromium" >&2
  else
    echo "chromium is not installed and cannot be installed here (need root and apt-get)" >&2
  fi
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "chromium is missing: $CHROMIUM" >&2
  exit 1
fi
echo "chromium: $CHROMIUM"
