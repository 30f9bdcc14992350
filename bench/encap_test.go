package bench

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tabbynet/tabby/encap"
)

// TestQuickEncap smoke-tests the encap suite: every case reports both
// metrics for tabby, the encap cases also for gopacket, with positive
// ns_per_op values.
func TestQuickEncap(t *testing.T) {
	got := runQuick(t, "encap", "20ms")
	var want []key
	for _, c := range []string{"vxlan-encap-64", "vxlan-encap-1500", "vxlan-decap-64", "vxlan-decap-1500",
		"ipip-encap-64", "ipip-encap-1500", "ipip-decap-64", "ipip-decap-1500"} {
		impls := []string{"tabby"}
		if bytes.Contains([]byte(c), []byte("encap")) {
			impls = append(impls, "gopacket")
		}
		for _, impl := range impls {
			want = append(want, key{c, impl, "ns_per_op"}, key{c, impl, "allocs_per_op"})
		}
	}
	units := map[string]string{"ns_per_op": "ns", "allocs_per_op": "allocs"}
	for _, k := range want {
		r, ok := got[k]
		switch {
		case !ok:
			t.Errorf("missing %+v", k)
		case r.Unit != units[k.metric]:
			t.Errorf("%+v: unit %q, want %q", k, r.Unit, units[k.metric])
		case k.metric == "allocs_per_op":
			// Tabby's operations do not allocate; the count can still pick
			// up a stray allocation of the benchmark harness.
			if r.Value < 0 || (k.impl == "tabby" && r.Value > 1e-3) {
				t.Errorf("%+v: value %v", k, r.Value)
			}
		case r.Value <= 0:
			t.Errorf("%+v: value %v, want > 0", k, r.Value)
		}
		delete(got, k)
	}
	for k := range got {
		t.Errorf("unexpected result %+v", k)
	}
}

// TestEncapReferenceFrames checks that the gopacket reference builds the
// same bytes as Tabby's encapsulation, so the two are compared on equal work.
func TestEncapReferenceFrames(t *testing.T) {
	tun, err := encapTunnel()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range encapFrameSizes {
		for _, mode := range []encap.Mode{encap.ModeVXLAN, encap.ModeIPIP} {
			buf := encapFrame(size)
			g := newGopacketEncap(mode, buf[encapHeadroom:])
			var o, l int
			if mode == encap.ModeVXLAN {
				o, l = encap.VXLANEncap(buf, encapHeadroom, size, tun, encapFlowHash)
			} else {
				o, l = encap.IPIPEncap(buf, encapHeadroom, size, tun)
			}
			ours := buf[o : o+l]
			ref, err := g.encap(binary.BigEndian.Uint16(ours[18:]), encapFlowHash)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours, ref) {
				t.Errorf("%v %d: gopacket frame differs from tabby's\n tabby    % x\n gopacket % x", mode, size, ours[:60], ref[:min(60, len(ref))])
			}
		}
	}
}
