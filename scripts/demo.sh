#!/usr/bin/env bash
# The demo: what Tabby can show today, end to end on this machine.
# Today that is the CPU-side dataplane: the full real Internet table loaded
# into the LPM, encapsulation, and the whole packet pipeline, each measured
# against its reference in the same run. The multi-node lab (`tabby lab`)
# replaces this once the CNI plugin and the agent land (issue #6).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin}/tabby
[ -x "$bin" ] || make build
echo "== tabby version"
"$bin" version
for suite in lpm encap pipeline; do
	echo
	echo "== tabby bench $suite"
	"$bin" bench "$suite" ${DEMO_QUICK:+--quick}
done
