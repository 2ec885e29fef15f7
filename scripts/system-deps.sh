#!/usr/bin/env bash
# System packages some tests need: Debian's chromium + chromedriver (the viewer's browser tests)
# and PostgreSQL (the key store's PostgreSQL conformance tests start a throwaway server).
# Installs what is missing when we are root; otherwise says how, and those tests skip with that
# reason.
set -u
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
if [ "${#want[@]}" = "0" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${want[*]} (browser and PostgreSQL tests)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null) \
    || echo "warning: could not install ${want[*]}; those tests will be skipped"
else
  echo "note: ${want[*]} not found; install them (e.g. 'sudo apt-get install ${want[*]}') to run the browser and PostgreSQL tests"
fi
exit 0
