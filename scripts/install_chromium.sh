#!/usr/bin/env bash
# Headless Chromium for tests/test_report_browser.py, from Debian's `chromium` package.
# Does nothing when /usr/bin/chromium already exists. Needs root (or passwordless sudo).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
