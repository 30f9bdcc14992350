#!/usr/bin/env bash
# The demo: what Tabby can show today, end to end on this machine.
#  1. a 4-node lab on two subnets (namespaces): embedded etcd, one tabby agent
#     per node (kernel and afxdp dataplanes in turn: n1, n3 kernel; n2, n4
#     AF_XDP, so pods talk through Tabby's userspace dataplane and the kernel's
#     VXLAN device is the peer of Tabby's encap), pods created by the CNI plugin
#     (labelled, in two namespaces), VXLAN between nodes; `lab check`: the ICMP/TCP/UDP matrix, policy (default
#     deny, allow by label, namespace isolation, egress deny), MTU with DF,
#     iperf3 per path, an agent SIGKILLed and restarted during a TCP stream;
#     `lab pods`: 100 pod add/delete cycles on an afxdp node (CNI ADD/DEL and
#     ADD-to-first-packet p50/p99) and a leak check; then everything removed;
#  2. the same lab with native routing (--encap none): BIRD 2 on the router
#     learns the pod blocks over BGP; matrix, MTU and iperf3;
#  3. the kernel's forwarding path against Tabby's AF_XDP dataplane on the same
#     namespace topology (gen -> dut -> sink), full Internet table loaded,
#     plain forwarding, VXLAN encap/decap and IP-in-IP, alternating in one run;
#  4. the CPU-side dataplane: the whole pipeline per packet, LPM against bart,
#     encapsulation against gopacket, policy classification against a
#     first-match reference.
# DEMO_LAB_DATAPLANE=kernel (or afxdp) runs the first lab with one dataplane
# on 3 nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/tabby
[ -x "$bin" ] || make build
echo "== $("$bin" version)"
if [ "$(id -u)" -eq 0 ]; then
	dp=${DEMO_LAB_DATAPLANE:-kernel,afxdp}
	nodes=3
	podnode=n1
	case "$dp" in *,*) nodes=4 podnode=n2 ;; esac
	trap '"$bin" lab down >/dev/null 2>&1 || true' EXIT
	"$bin" lab down >/dev/null 2>&1 || true
	echo
	echo "== tabby lab: $nodes nodes, 2 subnets, VXLAN, dataplane $dp"
	"$bin" lab up --nodes "$nodes" --subnets 2 --pods-per-node 2 --encap vxlan --dataplane "$dp"
	echo
	echo "== tabby lab check --checks all"
	"$bin" lab check --checks all
	echo
	echo "== tabby lab pods --cycles 100 --node $podnode"
	"$bin" lab pods --cycles 100 --node "$podnode"
	"$bin" lab down
	echo
	echo "== tabby lab: 3 nodes, 2 subnets, no encapsulation (BIRD 2 on the router peers with the nodes)"
	"$bin" lab up --nodes 3 --subnets 2 --pods-per-node 2 --encap none
	"$bin" lab check --checks matrix,mtu,iperf3
	"$bin" lab down
	trap - EXIT
	echo
	echo "== tabby bench e2e: kernel vs afxdp (network namespaces; removed afterwards)"
	TABBY_BENCH_E2E_REPS=${TABBY_BENCH_E2E_REPS:-1} TABBY_BENCH_E2E_DURATION=${TABBY_BENCH_E2E_DURATION:-2s} \
		TABBY_BENCH_E2E_SIZES=${TABBY_BENCH_E2E_SIZES:-=64} "$bin" bench e2e ${DEMO_QUICK:+--quick}
else
	echo "(not root: skipping the labs and the kernel-vs-afxdp run, which build network namespaces)"
fi
for suite in pipeline lpm encap acl; do
	echo
	echo "== tabby bench $suite"
	"$bin" bench "$suite" ${DEMO_QUICK:+--quick}
done
