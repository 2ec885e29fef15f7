#!/usr/bin/env bash
# System packages the browser tests need (Debian's chromium + chromedriver). Installs them when
# missing and we are root; otherwise says how, and the browser tests skip with that reason.
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (browser tests)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped"
else
  echo "note: chromium not found; install it (e.g. 'sudo apt-get install chromium') to run the browser tests"
fi
exit 0
