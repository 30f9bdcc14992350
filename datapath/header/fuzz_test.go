package header

import (
	"bytes"
	"testing"
)

// Fuzz targets for the parsers. Their seeds are in testdata/fuzz/<target>/,
// written from the table tests' packets by TestWriteFuzzCorpus.

func FuzzIPv6Transport(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b := IPv6(data)
		if !b.IsValid() {
			return // IPv6Transport's contract: a valid packet
		}
		proto, off, frag, ok := IPv6Transport(b)
		rp, ro, rf, rok := refIPv6Transport(b)
		if proto != rp || off != ro || frag != rf || ok != rok {
			t.Fatalf("IPv6Transport = %d, %d, %v, %v; reference %d, %d, %v, %v", proto, off, frag, ok, rp, ro, rf, rok)
		}
		if !ok {
			if proto != 0 || off != 0 || frag {
				t.Fatalf("not ok, but returned %d, %d, %v", proto, off, frag)
			}
			return
		}
		if end := IPv6Len + int(b.PayloadLen()); off < IPv6Len || off > end {
			t.Fatalf("off %d outside [%d, %d]", off, IPv6Len, end)
		}
		if (off-IPv6Len)%4 != 0 {
			t.Fatalf("off %d not a multiple of 4 after the fixed header", off)
		}
		// Only a non-first fragment ends the walk before an upper layer.
		switch proto {
		case IPv6HopByHop, IPv6Routing, IPv6DestOptions, IPv6Mobility, IPv6AH, IPv6Fragment:
			if !frag {
				t.Fatalf("walk stopped at extension header %d", proto)
			}
		}
	})
}

// FuzzViews puts arbitrary bytes through every view's IsValid and, where the
// view is valid, every accessor. Nothing may panic; a few invariants hold.
func FuzzViews(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := append([]byte(nil), data...)
		checkViews(t, data)
		if !bytes.Equal(orig, data) {
			t.Fatal("read-only accessors changed the data")
		}
		// The same bytes behind an Ethernet header and at odd offsets.
		if len(data) > 14 {
			checkViews(t, data[14:])
		}
		if len(data) > 1 {
			checkViews(t, data[1:])
		}
	})
}

// checkViews runs every read-only accessor that IsValid allows on data,
// then the writers on a copy.
func checkViews(t *testing.T, data []byte) {
	if e := Ethernet(data); e.IsValid() {
		_, _, _ = e.Dst().String(), e.Src().IsBroadcast(), e.Src().IsMulticast()
		_ = e.Type()
		if e.Tagged() && len(e) >= EthernetVLANLen {
			if e.VLAN() > 0xfff {
				t.Fatalf("VLAN %d wider than 12 bits", e.VLAN())
			}
			_ = e.InnerType()
		}
	}
	if a := ARP(data); a.IsValid() {
		_, _, _, _, _ = a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetMAC(), a.TargetIP()
	}
	if ip := IPv4(data); ip.IsValid() {
		hl := ip.HeaderLen()
		if hl < IPv4MinLen || hl > int(ip.TotalLen()) || int(ip.TotalLen()) > len(ip) {
			t.Fatalf("valid IPv4 with header length %d, total length %d, buffer %d", hl, ip.TotalLen(), len(ip))
		}
		_, _, _, _ = ip.TOS(), ip.ID(), ip.DF(), ip.IsFragment()
		if off := ip.FragOffset(); off%8 != 0 || off > 0x1fff*8 {
			t.Fatalf("FragOffset %d", off)
		}
		_, _, _ = ip.TTL(), ip.Protocol(), ip.Checksum()
		_, _, _, _ = ip.Src(), ip.Dst(), ip.SrcUint32(), ip.DstUint32()
		if !ip.SrcAddr().Is4() || !ip.DstAddr().Is4() {
			t.Fatal("SrcAddr or DstAddr not IPv4")
		}
		if p := ip.Payload(); len(p) != int(ip.TotalLen())-hl {
			t.Fatalf("Payload of %d bytes, want %d", len(p), int(ip.TotalLen())-hl)
		}
		ok := ip.HeaderChecksumOK()

		c := IPv4(append([]byte(nil), ip...))
		if ok && c.TTL() > 0 {
			c.DecTTL()
			if !c.HeaderChecksumOK() {
				t.Fatalf("DecTTL broke a valid checksum: % x", ip[:hl])
			}
		}
		c.ComputeChecksum()
		if !c.HeaderChecksumOK() {
			t.Fatalf("ComputeChecksum gave an invalid checksum: % x", c[:hl])
		}
		if ok && c.Checksum() != ip.Checksum() && c.TTL() == ip.TTL() {
			// Two valid checksums of the same header differ only as the
			// two zeros: recomputation gives 0x0000 where 0xffff was stored.
			if c.Checksum() != 0 || ip.Checksum() != 0xffff {
				t.Fatalf("recomputed %#04x, stored valid %#04x", c.Checksum(), ip.Checksum())
			}
		}
	}
	if ip := IPv6(data); ip.IsValid() {
		_, _, _, _ = ip.TrafficClass(), ip.NextHeader(), ip.HopLimit(), ip.PayloadLen()
		if ip.FlowLabel() > 0xfffff {
			t.Fatalf("FlowLabel %#x wider than 20 bits", ip.FlowLabel())
		}
		_, _ = ip.Src(), ip.Dst()
		if !ip.SrcAddr().Is6() || !ip.DstAddr().Is6() {
			t.Fatal("SrcAddr or DstAddr not IPv6")
		}
		_, _, _, _ = IPv6Transport(ip)
		c := IPv6(append([]byte(nil), ip...))
		tc, fl := c.TrafficClass(), c.FlowLabel()
		c.SetTrafficClass(^tc)
		if c.TrafficClass() != ^tc || c.FlowLabel() != fl || c[0]>>4 != 6 {
			t.Fatalf("SetTrafficClass changed other fields: % x", c[:4])
		}
	}
	if u := UDP(data); u.IsValid() {
		_, _, _ = u.SrcPort(), u.DstPort(), u.Checksum()
		if len(u.Payload()) != int(u.Length())-UDPLen {
			t.Fatalf("Payload of %d bytes, length field %d", len(u.Payload()), u.Length())
		}
	}
	if s := TCP(data); s.IsValid() {
		_, _, _, _, _, _ = s.SrcPort(), s.DstPort(), s.Seq(), s.Ack(), s.Flags(), s.Checksum()
		if hl := s.HeaderLen(); hl < TCPMinLen || hl > len(s) || hl%4 != 0 {
			t.Fatalf("HeaderLen %d in %d bytes", hl, len(s))
		}
	}
	if m := ICMPv4(data); m.IsValid() {
		_, _, _, _, _, _, _ = m.Type(), m.Code(), m.Checksum(), m.ID(), m.Seq(), m.MTU(), m.IsError()
	}
	if m := ICMPv6(data); m.IsValid() {
		_, _, _, _, _ = m.Type(), m.Code(), m.Checksum(), m.ID(), m.IsError()
	}
	if v := VXLAN(data); v.IsValid() {
		if v.VNI() > 0xffffff {
			t.Fatalf("VNI %#x wider than 24 bits", v.VNI())
		}
	}
}

func FuzzChecksum(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, initial uint16, split uint) {
		want := naiveChecksum(data, initial)
		if got := Checksum(data, initial); got != want {
			t.Fatalf("Checksum(%d bytes, %#04x) = %#04x, reference %#04x", len(data), initial, got, want)
		}
		// Two pieces, the first of even length.
		k := int(split % uint(len(data)+1))
		k &^= 1
		if got := Checksum(data[k:], Checksum(data[:k], initial)); got != want {
			t.Fatalf("in pieces of %d and %d bytes: %#04x, reference %#04x", k, len(data)-k, got, want)
		}
	})
}
