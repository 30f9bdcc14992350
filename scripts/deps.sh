#!/usr/bin/env bash
# Installs the Debian packages Tabby's tests and demo use. Idempotent; a no-op
# when everything is present. Needs root (CI runs as root) or sudo.
set -euo pipefail

# iperf3: the lab's throughput check; bird2: the lab router and the BIRD interop tests.
pkgs=(iproute2 ethtool tcpdump nftables bird2 iputils-ping iperf3)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null; then
	echo "deps: missing ${missing[*]} and no apt-get; install them by hand" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
