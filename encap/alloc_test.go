package encap_test

import (
	"testing"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// testFrame builds an untagged IPv4/UDP Ethernet frame of n bytes (n ≥ 42)
// at buf[off:off+n] with the header package, as a datapath worker would see
// it.
func testFrame(buf []byte, off, n int, tos uint8) {
	f := buf[off : off+n]
	header.Ethernet(f).Encode(gwMAC, podMAC, header.EtherTypeIPv4)
	header.IPv4(f[14:]).Encode(&header.IPv4Fields{TOS: tos, TotalLen: uint16(n - 14), ID: 1, TTL: 64,
		Protocol: header.ProtoUDP, Src: [4]byte(pod4A.To4()), Dst: [4]byte(pod4B.To4())})
	header.UDP(f[34:]).Encode(40000, 7777, uint16(n-34), 0)
}

func TestAllocs(t *testing.T) {
	tun := newTunnel(t, nil)
	buf := make([]byte, 2048)
	const off, n = 256, 1000
	testFrame(buf, off, n, 0xb8|2)
	var eth [14]byte
	copy(eth[:], buf[off:])
	// Each case restores what the previous run overwrote.
	cases := []struct {
		name string
		f    func()
	}{
		{"VXLANEncap", func() { encap.VXLANEncap(buf, off, n, tun, 12345) }},
		{"VXLANDecap", func() {
			o, l := encap.VXLANEncap(buf, off, n, tun, 12345)
			if _, _, v := encap.VXLANDecap(buf, o, l, encap.DefaultVNI); v != encap.OK {
				t.Fatal(v)
			}
		}},
		{"IPIPEncap", func() {
			copy(buf[off:], eth[:])
			encap.IPIPEncap(buf, off, n, tun)
		}},
		{"IPIPDecap", func() {
			copy(buf[off:], eth[:])
			o, l := encap.IPIPEncap(buf, off, n, tun)
			if _, _, v := encap.IPIPDecap(buf, o, l); v != encap.OK {
				t.Fatal(v)
			}
		}},
		{"FlowHash", func() { encap.FlowHash(buf[off:off+n], 1) }},
		{"FragNeededIPv4", func() {
			copy(buf[off:], eth[:])
			if _, _, v := encap.FragNeededIPv4(buf, off, n, 576, [4]byte{10, 0, 0, 1}); v != encap.OK {
				t.Fatal(v)
			}
		}},
		{"FragmentIPv4", func() {
			copy(buf[off:], eth[:])
			if _, v := encap.FragmentIPv4(buf[off+14:off+n], 576, fragDst); v != encap.OK {
				t.Fatal(v)
			}
			for i := range fragDst {
				fragDst[i] = fragDst[i][:cap(fragDst[i])]
			}
		}},
	}
	for _, c := range cases {
		if a := testing.AllocsPerRun(100, c.f); a != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, a)
		}
	}
}

var fragDst = fragBufs(4, 600)
