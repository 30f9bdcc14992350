package encap_test

import (
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/encap"
)

func TestFlowHashFrame(t *testing.T) {
	const seed = 99
	udp4 := buildInner(t, innerSpec{kind: "udp4", ipLen: 100, seed: 1})
	sp := uint16(udp4[34])<<8 | uint16(udp4[35])
	want := encap.FlowHashIPv4([4]byte(pod4A.To4()), [4]byte(pod4B.To4()), 17, sp, 7777, seed)
	if got := encap.FlowHash(udp4, seed); got != want {
		t.Errorf("udp4: FlowHash %#x, FlowHashIPv4 %#x", got, want)
	}
	if encap.FlowHash(udp4, seed+1) == want {
		t.Errorf("seed does not change the hash")
	}

	// A VLAN-tagged copy hashes like the untagged frame.
	tagged := append(append(append([]byte(nil), udp4[:12]...), 0x81, 0x00, 0x00, 0x64), udp4[12:]...)
	if got := encap.FlowHash(tagged, seed); got != want {
		t.Errorf("tagged: %#x, want %#x", got, want)
	}

	// Fragments hash without ports: the first and a later fragment agree.
	frag := append([]byte(nil), udp4...)
	frag[20] |= 0x20 // MF
	noPorts := encap.FlowHashIPv4([4]byte(pod4A.To4()), [4]byte(pod4B.To4()), 17, 0, 0, seed)
	if got := encap.FlowHash(frag, seed); got != noPorts {
		t.Errorf("first fragment: %#x, want %#x", got, noPorts)
	}
	frag[20], frag[21] = 0, 10 // offset 80
	if got := encap.FlowHash(frag, seed); got != noPorts {
		t.Errorf("later fragment: %#x, want %#x", got, noPorts)
	}

	tcp6 := buildInner(t, innerSpec{kind: "tcp6", ipLen: 100, seed: 2})
	sp6 := uint16(tcp6[54])<<8 | uint16(tcp6[55])
	want6 := encap.FlowHashIPv6([16]byte(pod6A), [16]byte(pod6B), 6, sp6, 8443, seed)
	if got := encap.FlowHash(tcp6, seed); got != want6 {
		t.Errorf("tcp6: %#x, want %#x", got, want6)
	}

	// IPv6 with a hop-by-hop header in front of UDP still finds the ports.
	ip := &layers.IPv6{Version: 6, HopLimit: 9, NextHeader: layers.IPProtocolIPv6HopByHop, SrcIP: pod6A, DstIP: pod6B}
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolUDP
	hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
	u := &layers.UDP{SrcPort: 1234, DstPort: 5678}
	u.SetNetworkLayerForChecksum(ip)
	ext := serialize(t, &layers.Ethernet{SrcMAC: net.HardwareAddr(podMAC[:]), DstMAC: net.HardwareAddr(gwMAC[:]), EthernetType: layers.EthernetTypeIPv6}, ip, hbh, u)
	if got, want := encap.FlowHash(ext, seed), encap.FlowHashIPv6([16]byte(pod6A), [16]byte(pod6B), 17, 1234, 5678, seed); got != want {
		t.Errorf("ipv6 hop-by-hop: %#x, want %#x", got, want)
	}

	// Odd frames hash without panicking.
	for _, f := range [][]byte{nil, {1, 2, 3}, make([]byte, 14), buildInner(t, innerSpec{kind: "arp"}), udp4[:30], tcp6[:50]} {
		encap.FlowHash(f, seed)
	}
}

// chiSquare returns the chi-square statistic of counts against a uniform
// distribution.
func chiSquare(counts []int, total int) float64 {
	exp := float64(total) / float64(len(counts))
	var x float64
	for _, c := range counts {
		d := float64(c) - exp
		x += d * d / exp
	}
	return x
}

// TestSourcePortDistribution checks that VXLAN source ports spread evenly
// over 49152–65535 for random flows and for the structured flow sets a
// cluster produces (one client's ephemeral ports, one port across a /16).
// With 256 buckets (255 degrees of freedom) the statistic averages 255 with
// a standard deviation of 22.6; the bound 400 is over six deviations away.
func TestSourcePortDistribution(t *testing.T) {
	const buckets = 256
	rng := rand.New(rand.NewPCG(3, 4))
	sets := map[string]func(i int) uint32{
		"random 5-tuples": func(int) uint32 {
			var s, d [4]byte
			for i := range 4 {
				s[i], d[i] = byte(rng.Uint32()), byte(rng.Uint32())
			}
			return encap.FlowHashIPv4(s, d, 6, uint16(rng.Uint32()), uint16(rng.Uint32()), 1)
		},
		"one client, sequential source ports": func(i int) uint32 {
			return encap.FlowHashIPv4([4]byte{10, 65, 0, 2}, [4]byte{10, 65, 1, 3}, 6, uint16(i), 443, 1)
		},
		"a /16 of clients, one service": func(i int) uint32 {
			return encap.FlowHashIPv4([4]byte{10, 65, byte(i >> 8), byte(i)}, [4]byte{10, 96, 0, 10}, 17, 53000, 53, 1)
		},
		"ipv6 sequential source ports": func(i int) uint32 {
			return encap.FlowHashIPv6([16]byte(pod6A), [16]byte(pod6B), 6, uint16(i), 443, 1)
		},
	}
	for name, gen := range sets {
		t.Run(name, func(t *testing.T) {
			const flows = 65536
			counts := make([]int, buckets)
			seen := make(map[uint16]bool)
			for i := range flows {
				p := encap.SourcePort(gen(i))
				if p < 49152 {
					t.Fatalf("source port %d below 49152", p)
				}
				counts[(p-49152)>>6]++
				seen[p] = true
			}
			x := chiSquare(counts, flows)
			t.Logf("chi-square %.1f, %d distinct ports", x, len(seen))
			if x > 400 {
				t.Errorf("chi-square %.1f over %d buckets, want < 400", x, buckets)
			}
			// 65536 flows into 16384 ports leave e^-4 ≈ 1.8% of ports unused.
			if len(seen) < 16384*96/100 {
				t.Errorf("%d distinct ports, want ≥ 96%% of 16384", len(seen))
			}
		})
	}
}

func TestSourcePortRange(t *testing.T) {
	for _, h := range []uint32{0, 1, 1 << 18, 0xffffffff, 0x80000000} {
		if p := encap.SourcePort(h); p < 49152 {
			t.Errorf("SourcePort(%#x) = %d", h, p)
		}
	}
	if encap.SourcePort(0) != 49152 || encap.SourcePort(0xffffffff) != 65535 {
		t.Errorf("range ends: %d, %d", encap.SourcePort(0), encap.SourcePort(0xffffffff))
	}
}

// TestFlowHashAvalanche flips each bit of a 5-tuple and checks that about
// half of the 32 hash bits change on average.
func TestFlowHashAvalanche(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var changed, trials int
	for range 2000 {
		var k [13]byte
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		h := func(k [13]byte) uint32 {
			return encap.FlowHashIPv4([4]byte(k[0:4]), [4]byte(k[4:8]), k[8], uint16(k[9])<<8|uint16(k[10]), uint16(k[11])<<8|uint16(k[12]), 77)
		}
		base := h(k)
		for bit := range 13 * 8 {
			k2 := k
			k2[bit/8] ^= 1 << (bit % 8)
			changed += popcount(base ^ h(k2))
			trials++
		}
	}
	if avg := float64(changed) / float64(trials); avg < 15.5 || avg > 16.5 {
		t.Errorf("a flipped input bit changes %.2f hash bits on average, want ≈ 16", avg)
	}
}

func popcount(x uint32) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}
