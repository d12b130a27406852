#!/bin/sh
# Install Debian's chromium when it is missing (for the report-rendering tests). Needs root
# (CI is root); elsewhere the tests skip unless CI is set, where they fail instead.
set -e
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "chromium is not installed and this is not root: the report-rendering tests will skip" >&2
    exit 0
fi
echo "installing Debian's chromium package (for the report-rendering tests)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
