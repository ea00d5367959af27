#!/usr/bin/env bash
# Installs what some tests need beyond npm packages (Debian's Chromium for the browser test).
# Tests that need a missing prerequisite say so and fail; run this first (CI does).
set -u
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is not installed and cannot be installed here (need root and apt-get)" >&2
    exit 1
  fi
fi
command -v chromium
