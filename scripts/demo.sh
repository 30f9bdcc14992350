#!/usr/bin/env bash
# The demo: what Tabby can show today, end to end on this machine.
#  1. a 3-node lab on two subnets (namespaces): embedded etcd, one tabby agent
#     per node, pods created by the CNI plugin, VXLAN between nodes; the
#     ICMP/TCP/UDP connectivity matrix; then everything removed;
#  2. the kernel's forwarding path against Tabby's AF_XDP dataplane on the same
#     namespace topology (gen -> dut -> sink), full Internet table loaded,
#     plain forwarding, VXLAN encap/decap and IP-in-IP, alternating in one run;
#  3. the CPU-side dataplane: the whole pipeline per packet, LPM against bart,
#     encapsulation against gopacket, policy classification against a
#     first-match reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/tabby
[ -x "$bin" ] || make build
echo "== $("$bin" version)"
if [ "$(id -u)" -eq 0 ]; then
	echo
	echo "== tabby lab: 3 nodes, 2 subnets, VXLAN, kernel dataplane"
	trap '"$bin" lab down >/dev/null 2>&1 || true' EXIT
	"$bin" lab down >/dev/null 2>&1 || true
	"$bin" lab up --nodes 3 --subnets 2 --pods-per-node 2 --encap vxlan
	"$bin" lab check
	"$bin" lab down
	trap - EXIT
	echo
	echo "== tabby bench e2e: kernel vs afxdp (network namespaces; removed afterwards)"
	TABBY_BENCH_E2E_REPS=${TABBY_BENCH_E2E_REPS:-1} TABBY_BENCH_E2E_DURATION=${TABBY_BENCH_E2E_DURATION:-2s} \
		TABBY_BENCH_E2E_SIZES=${TABBY_BENCH_E2E_SIZES:-=64} "$bin" bench e2e ${DEMO_QUICK:+--quick}
else
	echo "(not root: skipping the lab and the kernel-vs-afxdp run, which build network namespaces)"
fi
for suite in pipeline lpm encap acl; do
	echo
	echo "== tabby bench $suite"
	"$bin" bench "$suite" ${DEMO_QUICK:+--quick}
done
