package encap_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// TestRoundTrip encapsulates seeded random inner frames and decapsulates
// them again: decap must return exactly the original inner bytes (VXLAN:
// with the VTEP MACs; IP-in-IP: the IP packet behind a zero-MAC Ethernet
// header), at the original offset.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(20240601, 1))
	kinds := []string{"udp4", "tcp4", "icmp4", "udp6", "tcp6", "icmp6", "arp"}
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	for i := range iters {
		tun := newTunnel(t, func(c *encap.TunnelConfig) {
			c.TTL = uint8(rng.Uint32())
			c.VNI = 1 + rng.Uint32N(1<<24-1)
		})
		vni := tun.Config().VNI
		s := innerSpec{kind: kinds[rng.IntN(len(kinds))], ipLen: rng.IntN(1501), tos: uint8(rng.Uint32()), seed: rng.Uint64(), df: rng.IntN(2) == 0}
		frame := buildInner(t, s)
		headroom := 64 + rng.IntN(200)

		buf, off, n := place(frame, headroom)
		o, l := encap.VXLANEncap(buf, off, n, tun, rng.Uint32())
		iOff, iLen, v := encap.VXLANDecap(buf, o, l, vni)
		if v != encap.OK || iOff != off || iLen != n {
			t.Fatalf("%d %s: VXLAN round trip (%d, %d, %v), want (%d, %d, ok)", i, s.name(), iOff, iLen, v, off, n)
		}
		if !bytes.Equal(buf[iOff:iOff+iLen], setMACs(frame, remoteVTEPMAC, vtepMAC)) {
			t.Fatalf("%d %s: VXLAN round trip changed the inner frame", i, s.name())
		}

		if s.v6() || s.kind == "arp" {
			continue
		}
		buf, off, _ = place(frame, headroom)
		o, l = encap.IPIPEncap(buf, off, n, tun)
		iOff, iLen, v = encap.IPIPDecap(buf, o, l)
		ip := ipPacket(frame)
		if v != encap.OK || iOff != off || iLen != 14+len(ip) {
			t.Fatalf("%d %s: IPIP round trip (%d, %d, %v), want (%d, %d, ok)", i, s.name(), iOff, iLen, v, off, 14+len(ip))
		}
		if !bytes.Equal(buf[iOff:iOff+iLen], wantIPIPDecap(ip)) {
			t.Fatalf("%d %s: IPIP round trip changed the inner packet", i, s.name())
		}
	}
}

// TestRoundTripRawFrames carries random bytes with random EtherTypes through
// VXLAN: anything Ethernet-shaped survives, except IP EtherTypes without a
// whole IP header, which decapsulation drops.
func TestRoundTripRawFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	tun := newTunnel(t, nil)
	for i := range 5000 {
		frame := make([]byte, 14+rng.IntN(200))
		for j := range frame {
			frame[j] = byte(rng.Uint32())
		}
		switch rng.IntN(4) {
		case 0:
			be16(frame[12:], header.EtherTypeIPv4)
		case 1:
			be16(frame[12:], header.EtherTypeIPv6)
		}
		if rng.IntN(2) == 0 && len(frame) > 14 { // a plausible version nibble
			frame[14] = frame[14]&0x0f | 0x40
			if frame[12] == 0x86 && frame[13] == 0xdd {
				frame[14] = frame[14]&0x0f | 0x60
			}
		}
		want := encap.OK
		switch et := uint16(frame[12])<<8 | uint16(frame[13]); {
		case et == header.EtherTypeIPv4 && (len(frame) < 34 || frame[14]>>4 != 4),
			et == header.EtherTypeIPv6 && (len(frame) < 54 || frame[14]>>4 != 6):
			want = encap.DropBadInner
		}
		buf, off, n := place(frame, 100)
		o, l := encap.VXLANEncap(buf, off, n, tun, uint32(i))
		iOff, iLen, v := encap.VXLANDecap(buf, o, l, encap.DefaultVNI)
		if v != want {
			t.Fatalf("%d: verdict %v, want %v (frame % x)", i, v, want, frame[:min(len(frame), 40)])
		}
		if v == encap.OK && (iOff != off || iLen != n || !bytes.Equal(buf[iOff:iOff+iLen], setMACs(frame, remoteVTEPMAC, vtepMAC))) {
			t.Fatalf("%d: round trip changed the frame", i)
		}
	}
}
