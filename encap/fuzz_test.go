package encap_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

const fuzzHeadroom = 64

// FuzzVXLANDecap feeds arbitrary frames and VNIs to VXLANDecap: it must
// never panic, must leave a dropped frame untouched, and when it accepts a
// frame the inner frame must lie within the outer one and survive a fresh
// encapsulation and decapsulation byte for byte (VTEP MACs aside).
func FuzzVXLANDecap(f *testing.F) {
	f.Add(vxlanSeed(f, innerSpec{kind: "udp4", ipLen: 64}, 0), uint32(encap.DefaultVNI), false)
	f.Fuzz(func(t *testing.T, frame []byte, vni uint32, fix bool) {
		if fix {
			fixOuter(frame, true)
		}
		buf, off, n := place(frame, fuzzHeadroom)
		before := append([]byte(nil), buf...)
		iOff, iLen, v := encap.VXLANDecap(buf, off, n, vni)
		if !v.IsOK() {
			if !bytes.Equal(buf, before) {
				t.Fatalf("%v: dropped frame modified", v)
			}
			return
		}
		if iOff < off+encap.VXLANOverhead || iLen < header.EthernetLen || iOff+iLen > off+n {
			t.Fatalf("inner (%d, %d) outside the outer frame (%d, %d)", iOff, iLen, off, n)
		}
		if vni == 0 {
			return // VNI 0 cannot be configured on a Tunnel
		}
		inner := append([]byte(nil), buf[iOff:iOff+iLen]...)
		tun := newTunnel(t, func(c *encap.TunnelConfig) { c.VNI = vni })
		b2, o2, n2 := place(inner, fuzzHeadroom)
		o, l := encap.VXLANEncap(b2, o2, n2, tun, encap.FlowHash(inner, 1))
		if l == 0 {
			t.Fatalf("re-encapsulation failed")
		}
		i2, l2, v2 := encap.VXLANDecap(b2, o, l, vni)
		if v2 != encap.OK || i2 != o2 || l2 != n2 {
			t.Fatalf("round trip (%d, %d, %v), want (%d, %d, ok)", i2, l2, v2, o2, n2)
		}
		if !bytes.Equal(b2[i2:i2+l2], setMACs(inner, remoteVTEPMAC, vtepMAC)) {
			t.Fatalf("round trip changed the inner frame")
		}
	})
}

// FuzzIPIPDecap is FuzzVXLANDecap for IPIPDecap.
func FuzzIPIPDecap(f *testing.F) {
	f.Add(ipipSeed(f, innerSpec{kind: "tcp4", ipLen: 64}, 0), false)
	f.Fuzz(func(t *testing.T, frame []byte, fix bool) {
		if fix {
			fixOuter(frame, false)
		}
		buf, off, n := place(frame, fuzzHeadroom)
		before := append([]byte(nil), buf...)
		iOff, iLen, v := encap.IPIPDecap(buf, off, n)
		if !v.IsOK() {
			if !bytes.Equal(buf, before) {
				t.Fatalf("%v: dropped frame modified", v)
			}
			return
		}
		if iOff < off+encap.IPIPOverhead || iLen < header.EthernetLen+header.IPv4MinLen || iOff+iLen > off+n {
			t.Fatalf("inner (%d, %d) outside the outer frame (%d, %d)", iOff, iLen, off, n)
		}
		inner := append([]byte(nil), buf[iOff:iOff+iLen]...)
		tun := newTunnel(t, nil)
		b2, o2, n2 := place(inner, fuzzHeadroom)
		o, l := encap.IPIPEncap(b2, o2, n2, tun)
		if l == 0 {
			t.Fatalf("re-encapsulation failed")
		}
		i2, l2, v2 := encap.IPIPDecap(b2, o, l)
		if v2 != encap.OK || i2 != o2 || l2 != n2 {
			t.Fatalf("round trip (%d, %d, %v), want (%d, %d, ok)", i2, l2, v2, o2, n2)
		}
		if !bytes.Equal(b2[i2:i2+l2], inner) {
			t.Fatalf("round trip changed the inner frame")
		}
	})
}

// fixOuter recomputes the outer IPv4 header checksum of an arbitrary frame
// (and zeroes the UDP checksum if udp), so that the fuzzer, when it sets
// fix, gets past the checksum checks to the rest of decapsulation.
func fixOuter(frame []byte, udp bool) {
	if len(frame) < 14+20 {
		return
	}
	ihl := int(frame[14]&0x0f) * 4
	if ihl < 20 || 14+ihl > len(frame) {
		return
	}
	ip := frame[14 : 14+ihl]
	ip[10], ip[11] = 0, 0
	c := ^header.Checksum(ip, 0)
	ip[10], ip[11] = byte(c>>8), byte(c)
	if udp && len(frame) >= 14+ihl+8 {
		frame[14+ihl+6], frame[14+ihl+7] = 0, 0
	}
}

// vxlanSeed returns a VXLAN frame around the inner frame of s, with outer
// ECN field ecn.
func vxlanSeed(tb testing.TB, s innerSpec, ecn uint8) []byte {
	tun := newTunnel(tb, nil)
	buf, off, n := place(buildInner(tb, s), testHeadroom)
	o, l := encap.VXLANEncap(buf, off, n, tun, 1)
	ip := header.IPv4(buf[o+14:])
	ip.SetTOS(ip.TOS()&^3 | ecn)
	ip.ComputeChecksum()
	return buf[o : o+l]
}

// ipipSeed is vxlanSeed for IP-in-IP.
func ipipSeed(tb testing.TB, s innerSpec, ecn uint8) []byte {
	tun := newTunnel(tb, nil)
	buf, off, n := place(buildInner(tb, s), testHeadroom)
	o, l := encap.IPIPEncap(buf, off, n, tun)
	ip := header.IPv4(buf[o+14:])
	ip.SetTOS(ip.TOS()&^3 | ecn)
	ip.ComputeChecksum()
	return buf[o : o+l]
}

// TestWriteFuzzSeeds regenerates the seed corpus in testdata/fuzz when
// TABBY_WRITE_FUZZ_SEEDS=1. Crashers found by fuzzing are kept there too.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("TABBY_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set TABBY_WRITE_FUZZ_SEEDS=1 to regenerate the seed corpus")
	}
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		s := "go test fuzz v1\n"
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				s += fmt.Sprintf("[]byte(%q)\n", a)
			case uint32:
				s += fmt.Sprintf("uint32(%d)\n", a)
			case bool:
				s += fmt.Sprintf("bool(%v)\n", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vni := uint32(encap.DefaultVNI)
	for _, kind := range []string{"udp4", "tcp4", "icmp4", "udp6", "tcp6", "arp"} {
		for ecnIn := range uint8(4) {
			for ecnOut := range uint8(4) {
				if kind == "arp" && ecnIn > 0 {
					continue
				}
				s := innerSpec{kind: kind, ipLen: 60, tos: ecnIn}
				write("FuzzVXLANDecap", fmt.Sprintf("%s-in%d-out%d", kind, ecnIn, ecnOut), vxlanSeed(t, s, ecnOut), vni, false)
				if kind == "udp4" || kind == "tcp4" || kind == "icmp4" {
					write("FuzzIPIPDecap", fmt.Sprintf("%s-in%d-out%d", kind, ecnIn, ecnOut), ipipSeed(t, s, ecnOut), false)
				}
			}
		}
	}
	// gopacket-built frames: a UDP checksum, and a VNI of 1.
	inner := buildInner(t, innerSpec{kind: "tcp4", ipLen: 80})
	write("FuzzVXLANDecap", "udp-checksum", outerVXLAN(t, inner, 0, encap.DefaultVNI), vni, false)
	write("FuzzVXLANDecap", "vni-1", outerVXLAN(t, inner, 0, 1), uint32(1), false)
	write("FuzzVXLANDecap", "wrong-vni", outerVXLAN(t, inner, 0, 1), vni, false)
	write("FuzzIPIPDecap", "gopacket", outerIPIP(t, ipPacket(inner), 2), false)
	// Broken checksums the fuzzer may ask to fix.
	bad := vxlanSeed(t, innerSpec{kind: "tcp6", ipLen: 90, tos: 1}, 3)
	bad[24] ^= 0xff
	write("FuzzVXLANDecap", "fix-checksum", bad, vni, true)
	badIPIP := ipipSeed(t, innerSpec{kind: "udp4", ipLen: 90, tos: 2}, 1)
	badIPIP[24] ^= 0xff
	write("FuzzIPIPDecap", "fix-checksum", badIPIP, true)
	// Truncations and empty input.
	full := vxlanSeed(t, innerSpec{kind: "udp4", ipLen: 60}, 0)
	for _, n := range []int{0, 13, 33, 41, 49, 63, 70} {
		write("FuzzVXLANDecap", fmt.Sprintf("truncated-%d", n), full[:n], vni, false)
	}
	fullIPIP := ipipSeed(t, innerSpec{kind: "udp4", ipLen: 60}, 0)
	for _, n := range []int{0, 13, 33, 53, 60} {
		write("FuzzIPIPDecap", fmt.Sprintf("truncated-%d", n), fullIPIP[:n], false)
	}
}
