#!/usr/bin/env bash
# The demo: what Tabby can show today, end to end on this machine.
#  1. the kernel's forwarding path against Tabby's AF_XDP dataplane on the same
#     namespace topology (gen -> dut -> sink), full Internet table loaded,
#     plain forwarding, VXLAN encap/decap and IP-in-IP, alternating in one run;
#  2. the CPU-side dataplane: the whole pipeline per packet, LPM against bart,
#     encapsulation against gopacket, policy classification against a
#     first-match reference.
# The multi-node lab with pods (`tabby lab`) replaces part 1 once the CNI
# plugin and the agent land (issue #6).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/tabby
[ -x "$bin" ] || make build
echo "== $("$bin" version)"
if [ "$(id -u)" -eq 0 ]; then
	echo
	echo "== tabby bench e2e: kernel vs afxdp (network namespaces; removed afterwards)"
	TABBY_BENCH_E2E_REPS=${TABBY_BENCH_E2E_REPS:-1} TABBY_BENCH_E2E_DURATION=${TABBY_BENCH_E2E_DURATION:-2s} \
		TABBY_BENCH_E2E_SIZES=${TABBY_BENCH_E2E_SIZES:-=64} "$bin" bench e2e ${DEMO_QUICK:+--quick}
else
	echo "(not root: skipping the kernel-vs-afxdp run, which builds network namespaces)"
fi
for suite in pipeline lpm encap acl; do
	echo
	echo "== tabby bench $suite"
	"$bin" bench "$suite" ${DEMO_QUICK:+--quick}
done
