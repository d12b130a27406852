#!/bin/sh
# Install Debian's prometheus (server + promtool) when it is missing. Needs root (CI is root).
set -e
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "prometheus is not installed and this is not root: the Prometheus tests will skip" >&2
    exit 0
fi
echo "installing Debian's prometheus package (for the monitoring tests)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d stops the package from starting a system service inside containers.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
rm -f /usr/sbin/policy-rc.d
