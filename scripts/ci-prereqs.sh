#!/usr/bin/env bash
# Installs what some tests need beyond npm packages, from Debian's packages:
#   chromium  /usr/bin/chromium for the browser test (driven by playwright-core, which never
#             downloads a browser of its own)
#   redis     redis-server for the Redis broker tests (started by the tests on free ports, each
#             with its own directory; nothing here starts a server)
# With no argument both; `ci-prereqs.sh redis` installs only that one. Idempotent and quiet:
# does nothing for what is there; runs apt-get update only to install. Exits 1 when something
# asked for is still missing. CI runs it first; the Redis tests run it when redis-server is
# missing and skip, saying why, only when it cannot be installed.
set -u
[ "$#" -eq 0 ] && set -- chromium redis

apt_install() { # package
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Two test files may ask at once: wait for dpkg's lock instead of failing.
    apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null &&
      apt-get -o DPkg::Lock::Timeout=120 install -y -qq "$1" >/dev/null ||
      echo "apt-get could not install $1" >&2
  else
    echo "$1 is not installed and cannot be installed here (need root and apt-get)" >&2
  fi
}

status=0
for want in "$@"; do
  case "$want" in
    chromium)
      CHROMIUM=/usr/bin/chromium
      [ -x "$CHROMIUM" ] || apt_install chromium
      if [ -x "$CHROMIUM" ]; then echo "chromium: $CHROMIUM"; else
        echo "chromium is missing: $CHROMIUM" >&2
        status=1
      fi
      ;;
    redis)
      command -v redis-server >/dev/null 2>&1 || apt_install redis-server
      if command -v redis-server >/dev/null 2>&1; then
        echo "redis-server: $(command -v redis-server) ($(redis-server --version | grep -o 'v=[^ ]*'))"
      else
        echo "redis-server is missing" >&2
        status=1
      fi
      ;;
    *)
      echo "unknown prerequisite: $want (chromium, redis)" >&2
      status=1
      ;;
  esac
done
exit "$status"
