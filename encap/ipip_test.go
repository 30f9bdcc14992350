package encap_test

import (
	"bytes"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

func TestIPIPEncap(t *testing.T) {
	for _, ttl := range []uint8{0, 7} {
		tun := newTunnel(t, func(c *encap.TunnelConfig) { c.TTL = ttl })
		for _, s := range encapCases([]string{"udp4", "tcp4", "icmp4"}) {
			t.Run(fmt.Sprintf("ttl%d/%s", ttl, s.name()), func(t *testing.T) {
				frame := buildInner(t, s)
				buf, off, n := place(frame, testHeadroom)
				newOff, newLen := encap.IPIPEncap(buf, off, n, tun)
				ip := ipPacket(frame) // gopacket pads short frames to 60 bytes
				if newOff != off-encap.IPIPOverhead || newLen != 34+len(ip) {
					t.Fatalf("IPIPEncap = (%d, %d), want (%d, %d)", newOff, newLen, off-20, 34+len(ip))
				}
				checkIPIPFrame(t, buf[newOff:newOff+newLen], ip, wantOuterTOS(s.tos), tunnelTTL(ttl))
			})
		}
	}
}

func checkIPIPFrame(t *testing.T, out, innerIP []byte, tos, ttl uint8) {
	t.Helper()
	p := decode(t, out)
	ls := p.Layers()
	if len(ls) < 3 {
		t.Fatalf("decoded %d layers:\n%s", len(ls), p.Dump())
	}
	eth, ok1 := ls[0].(*layers.Ethernet)
	ip, ok2 := ls[1].(*layers.IPv4)
	iip, ok3 := ls[2].(*layers.IPv4)
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("layers %v, want Ethernet/IPv4/IPv4", ls)
	}
	checkOuterIPv4(t, eth, ip, layers.IPProtocolIPv4, tos, ttl, len(innerIP)+20)
	if !iip.SrcIP.Equal(pod4A) || !iip.DstIP.Equal(pod4B) {
		t.Errorf("inner IPv4 %v > %v", iip.SrcIP, iip.DstIP)
	}
	if !bytes.Equal(out[34:], innerIP) {
		t.Errorf("inner packet differs from the original")
	}
	verifyChecksums(t, p)
}

func TestIPIPEncapPaddingAndRejects(t *testing.T) {
	tun := newTunnel(t, nil)
	frame := buildInner(t, innerSpec{kind: "udp4"}) // 28-byte packet, padded to a 60-byte frame
	if len(frame) != 60 {
		t.Fatalf("inner frame %d bytes, want 60", len(frame))
	}
	buf, off, n := place(frame, testHeadroom)
	o, l := encap.IPIPEncap(buf, off, n, tun)
	if l != 34+28 {
		t.Fatalf("padded frame: newLen %d, want %d (padding not carried)", l, 34+28)
	}
	checkIPIPFrame(t, buf[o:o+l], ipPacket(frame), 0, 64)

	arp := buildInner(t, innerSpec{kind: "arp"})
	v6 := buildInner(t, innerSpec{kind: "udp6"})
	for _, c := range []struct {
		name     string
		frame    []byte
		headroom int
		mod      func([]byte)
	}{
		{"no headroom", frame, 19, nil},
		{"arp", arp, testHeadroom, nil},
		{"ipv6", v6, testHeadroom, nil},
		{"ihl", frame, testHeadroom, func(b []byte) { b[14] = 0x44 }},
		{"version", frame, testHeadroom, func(b []byte) { b[14] = 0x65 }},
		{"total length", frame, testHeadroom, func(b []byte) { b[16], b[17] = 0, 47 }},
		{"total length < ihl", frame, testHeadroom, func(b []byte) { b[16], b[17] = 0, 19 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := append([]byte(nil), c.frame...)
			if c.mod != nil {
				c.mod(f)
			}
			buf, off, n := place(f, c.headroom)
			checkEncapRejects(t, buf, func() int {
				_, l := encap.IPIPEncap(buf, off, n, tun)
				return l
			})
		})
	}
}

// outerIPIP builds an IP-in-IP packet around the IPv4 packet inner with
// gopacket.
// ipPacket returns the IPv4 packet of an untagged Ethernet frame, without
// link padding.
func ipPacket(frame []byte) []byte {
	ip := header.IPv4(frame[14:])
	return frame[14 : 14+int(ip.TotalLen())]
}

func outerIPIP(t *testing.T, innerIP []byte, tos uint8) []byte {
	t.Helper()
	return serialize(t,
		&layers.Ethernet{SrcMAC: net.HardwareAddr(nextHopMAC[:]), DstMAC: net.HardwareAddr(localMAC[:]), EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TOS: tos, TTL: 64, Id: 99, Protocol: layers.IPProtocolIPv4, SrcIP: net.IP(nodeB[:]), DstIP: net.IP(nodeA[:])},
		gopacket.Payload(innerIP))
}

// wantIPIPDecap is the Ethernet frame IPIPDecap makes of an inner packet.
func wantIPIPDecap(innerIP []byte) []byte {
	return append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00}, innerIP...)
}

func TestIPIPDecapECN(t *testing.T) {
	for in := range uint8(4) {
		for out := range uint8(4) {
			t.Run(fmt.Sprintf("inner-%s/outer-%s", ecnNames[in], ecnNames[out]), func(t *testing.T) {
				inner := buildInner(t, innerSpec{kind: "tcp4", ipLen: 120, tos: 46<<2 | in, seed: uint64(in*4 + out)})
				frame := outerIPIP(t, ipPacket(inner), 10<<2|out)
				buf, off, n := place(frame, testHeadroom)
				want := rfc6040[in][out]
				iOff, iLen, v := checkVerdict(t, buf, want.v, func() (int, int, encap.Verdict) { return encap.IPIPDecap(buf, off, n) })
				if !v.IsOK() {
					return
				}
				if iOff != off+20 || iLen != 14+len(ipPacket(inner)) {
					t.Fatalf("inner (%d, %d), want (%d, %d)", iOff, iLen, off+20, len(inner))
				}
				got := buf[iOff : iOff+iLen]
				p := decode(t, got)
				ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if ip.TOS != 46<<2|want.ecn {
					t.Errorf("inner TOS %#x, want %#x", ip.TOS, 46<<2|want.ecn)
				}
				verifyChecksums(t, p)
				w := wantIPIPDecap(ipPacket(inner))
				copy(w[14:34], got[14:34])
				if !bytes.Equal(got, w) {
					t.Errorf("inner packet changed beyond its ECN field")
				}
			})
		}
	}
}

func TestIPIPDecapVerdicts(t *testing.T) {
	tun := newTunnel(t, nil)
	inner := buildInner(t, innerSpec{kind: "udp4", ipLen: 100})
	ipip := func(buf []byte, off, n int) (int, int) { return encap.IPIPEncap(buf, off, n, tun) }
	fix := func(b []byte, off int, f func(ip header.IPv4)) {
		ip := outerIPAt(b, off)
		f(ip)
		ip.ComputeChecksum()
	}
	cases := []struct {
		name string
		mod  func(buf []byte, off, n int) (int, int)
		want encap.Verdict
	}{
		{"ok", nil, encap.OK},
		{"bad args", func(b []byte, off, n int) (int, int) { return len(b) + 1, 0 }, encap.BadArgs},
		{"short", func(b []byte, off, n int) (int, int) { return off, 53 }, encap.DropShort},
		{"ethertype", func(b []byte, off, n int) (int, int) { b[off+12] = 0x81; return off, n }, encap.DropNotIPv4},
		{"version", func(b []byte, off, n int) (int, int) { b[off+14] = 0x65; return off, n }, encap.DropBadIPHeader},
		{"total length", func(b []byte, off, n int) (int, int) { return off, n - 1 }, encap.DropBadIPHeader},
		{"checksum", func(b []byte, off, n int) (int, int) { b[off+14+12] ^= 0x80; return off, n }, encap.DropBadIPChecksum},
		{"fragment", func(b []byte, off, n int) (int, int) {
			fix(b, off, func(ip header.IPv4) { ip[6] |= 0x20 })
			return off, n
		}, encap.DropFragment},
		{"not ipip", func(b []byte, off, n int) (int, int) { fix(b, off, func(ip header.IPv4) { ip[9] = 41 }); return off, n }, encap.DropNotTunnel},
		{"inner short", func(b []byte, off, n int) (int, int) {
			fix(b, off, func(ip header.IPv4) { ip.SetTotalLen(20 + 19) })
			return off, n
		}, encap.DropShort},
		{"inner version", func(b []byte, off, n int) (int, int) { b[off+34] = 0x65; return off, n }, encap.DropBadInner},
		{"inner ihl", func(b []byte, off, n int) (int, int) { b[off+34] = 0x43; return off, n }, encap.DropBadInner},
		{"inner ihl past total length", func(b []byte, off, n int) (int, int) {
			b[off+34] = 0x4f
			b[off+34+2], b[off+34+3] = 0, 59
			return off, n
		}, encap.DropBadInner},
		{"inner total length", func(b []byte, off, n int) (int, int) { b[off+34+3]++; return off, n }, encap.DropBadInner},
		{"outer options", func(b []byte, off, n int) (int, int) {
			// Rebuild with a 24-byte outer header (one NOP option and EOL
			// padding) in the headroom.
			o := off - 4
			copy(b[o:o+14], b[off:off+14])
			hdr := append([]byte(nil), b[off+14:off+34]...)
			copy(b[o+14:], hdr)
			b[o+34], b[o+35], b[o+36], b[o+37] = 1, 0, 0, 0
			ip := outerIPAt(b, o)
			ip[0] = 0x46
			ip.SetTotalLen(ip.TotalLen() + 4)
			ip.ComputeChecksum()
			return o, n + 4
		}, encap.OK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			buf, off, n := decapInput(inner, ipip, c.mod)
			iOff, iLen, v := checkVerdict(t, buf, c.want, func() (int, int, encap.Verdict) { return encap.IPIPDecap(buf, off, n) })
			if !v.IsOK() {
				return
			}
			if !bytes.Equal(buf[iOff:iOff+iLen], wantIPIPDecap(ipPacket(inner))) {
				t.Errorf("inner frame differs")
			}
		})
	}
}
