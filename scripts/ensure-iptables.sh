#!/usr/bin/env bash
# Finds iptables and ip (iproute2), the tools the network-namespace test bed
# (internal/testutil/netns.go) uses to build namespaces and drop packets, or
# installs them from the OS packages. Prints the iptables path on stdout;
# everything else goes to stderr. Exits non-zero with a message that says
# what is missing and how to install it.
set -euo pipefail

have() { command -v iptables >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; }

if have; then command -v iptables; exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-iptables: iptables or ip not found; installing them from the OS packages (apt-get install iptables iproute2)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq iptables iproute2 >&2
	if have; then command -v iptables; exit 0; fi
fi

cat >&2 <<MSG
ensure-iptables: iptables and ip (iproute2) are needed by the network-namespace
tests (they drop packets between namespaces; this kernel has no netem).
  Install them, then re-run:
    Debian/Ubuntu: sudo apt-get install iptables iproute2
    Fedora/RHEL:   sudo dnf install iptables iproute
Without them (or without root and CAP_NET_ADMIN) those tests skip, and fail
under CI=true.
MSG
exit 1
