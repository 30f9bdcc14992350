package encap_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tabbynet/tabby/datapath/header"
	"github.com/tabbynet/tabby/encap"
)

// fragBufs returns count buffers of size bytes each.
func fragBufs(count, size int) [][]byte {
	out := make([][]byte, count)
	for i := range out {
		out[i] = make([]byte, size)
	}
	return out
}

// reassemble checks the fragments of orig and rebuilds the datagram from
// them: same ID, protocol and addresses, offsets multiples of 8, MF on all
// but the last, each fragment within mtu, valid checksums (via gopacket),
// non-copied options replaced by NOPs after the first fragment.
func reassemble(t *testing.T, orig []byte, frags [][]byte, mtu int) []byte {
	t.Helper()
	oip := header.IPv4(orig)
	ihl := oip.HeaderLen()
	type piece struct {
		off  int
		mf   bool
		data []byte
	}
	var ps []piece
	for i, f := range frags {
		p := gopacket.NewPacket(f, layers.LayerTypeIPv4, gopacket.Default)
		ipl, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			t.Fatalf("fragment %d: gopacket: %v", i, p.ErrorLayer())
		}
		// Only the IP header checksum: the payload of a fragment is a piece
		// of a transport segment, whatever gopacket makes of it.
		if _, res := ipl.VerifyChecksum(); !res.Valid {
			t.Errorf("fragment %d: IPv4 checksum %#04x, want %#04x", i, res.Actual, res.Correct)
		}
		if len(f) > mtu {
			t.Errorf("fragment %d: %d bytes, over the MTU %d", i, len(f), mtu)
		}
		if int(ipl.Length) != len(f) || int(ipl.IHL)*4 != ihl {
			t.Errorf("fragment %d: length %d ihl %d, buffer %d", i, ipl.Length, ipl.IHL, len(f))
		}
		if ipl.Id != oip.ID() || ipl.Protocol != layers.IPProtocol(oip.Protocol()) || ipl.TTL != oip.TTL() ||
			ipl.TOS != oip.TOS() || !bytes.Equal(ipl.SrcIP, orig[12:16]) || !bytes.Equal(ipl.DstIP, orig[16:20]) {
			t.Errorf("fragment %d: header fields differ from the original", i)
		}
		if ipl.Flags&layers.IPv4DontFragment != 0 {
			t.Errorf("fragment %d: DF set", i)
		}
		if i < len(frags)-1 && len(f[ihl:])%8 != 0 {
			t.Errorf("fragment %d: data length %d not a multiple of 8", i, len(f[ihl:]))
		}
		opts := f[20:ihl]
		if i == 0 && !bytes.Equal(opts, orig[20:ihl]) {
			t.Errorf("first fragment: options differ")
		}
		if i > 0 {
			for j, b := range orig[20:ihl] {
				if opts[j] != b && opts[j] != 1 {
					t.Errorf("fragment %d: option byte %d is %d, want %d or NOP", i, j, opts[j], b)
				}
			}
		}
		ps = append(ps, piece{int(ipl.FragOffset) * 8, ipl.Flags&layers.IPv4MoreFragments != 0, f[ihl:]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
	base := oip.FragOffset()
	var data []byte
	for i, p := range ps {
		if p.off != base+len(data) {
			t.Fatalf("fragment at %d, want %d (gap or overlap)", p.off, base+len(data))
		}
		wantMF := i < len(ps)-1 || oip.FlagsFragOff()&header.IPv4FlagMF != 0
		if p.mf != wantMF {
			t.Errorf("fragment %d: MF %v, want %v", i, p.mf, wantMF)
		}
		data = append(data, p.data...)
	}
	return data
}

func TestFragmentIPv4(t *testing.T) {
	opts := []layers.IPv4Option{
		{OptionType: 131, OptionLength: 7, OptionData: []byte{4, 10, 0, 0, 1}}, // LSRR, copied
		{OptionType: 1},
		{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, // record route, not copied
	}
	for _, c := range []struct {
		name    string
		payload int
		mtu     int
		opts    bool
		mf      bool
		fragOff uint16
	}{
		{"1500 into 1450", 1480, 1450, false, false, 0},
		{"1500 into 1480", 1480, 1480, false, false, 0},
		{"9000 into 1450", 8980, 1450, false, false, 0},
		{"exact multiple", 1440 * 2, 1460, false, false, 0},
		{"minimum mtu", 200, 68, false, false, 0},
		{"odd mtu", 3000, 1001, false, false, 0},
		{"options", 3000, 1450, true, false, 0},
		{"options minimum mtu", 300, 68, true, false, 0},
		{"refragment a middle fragment", 2960, 1450, false, true, 185},
		{"refragment the last fragment", 2961, 1450, false, false, 370},
	} {
		t.Run(c.name, func(t *testing.T) {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 33, TOS: 0xb8, Id: 0xbeef, Protocol: layers.IPProtocolUDP, SrcIP: pod4A, DstIP: pod4B, FragOffset: c.fragOff}
			if c.opts {
				ip.Options = opts
			}
			if c.mf {
				ip.Flags = layers.IPv4MoreFragments
			}
			payload := make([]byte, c.payload)
			for i := range payload {
				payload[i] = byte(i*31 + i>>8)
			}
			src := serialize(t, ip, gopacket.Payload(payload))
			dst := fragBufs(200, 2048)
			n, v := encap.FragmentIPv4(src, c.mtu, dst)
			if v != encap.OK {
				t.Fatalf("verdict %v", v)
			}
			ihl := header.IPv4(src).HeaderLen()
			chunk := (c.mtu - ihl) &^ 7
			if want := (c.payload + chunk - 1) / chunk; n != want {
				t.Fatalf("%d fragments, want %d", n, want)
			}
			if got := reassemble(t, src, dst[:n], c.mtu); !bytes.Equal(got, payload) {
				t.Fatalf("reassembled payload differs")
			}
		})
	}
}

func TestFragmentIPv4Random(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	dst := fragBufs(200, 9100)
	for i := range 300 {
		payload := make([]byte, 1+rng.IntN(9000))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		src := serialize(t, &layers.IPv4{Version: 4, IHL: 5, TTL: 9, Id: uint16(i), Protocol: 17, SrcIP: pod4A, DstIP: pod4B}, gopacket.Payload(payload))
		mtu := 68 + rng.IntN(9000)
		for j := range dst {
			dst[j] = dst[j][:cap(dst[j])]
		}
		n, v := encap.FragmentIPv4(src, mtu, dst)
		if v != encap.OK {
			t.Fatalf("%d: verdict %v", i, v)
		}
		if got := reassemble(t, src, dst[:n], mtu); !bytes.Equal(got, payload) {
			t.Fatalf("%d: reassembled payload differs (payload %d, mtu %d)", i, len(payload), mtu)
		}
	}
}

func TestFragmentIPv4Verdicts(t *testing.T) {
	pkt := func(mod func(*layers.IPv4), payload int) []byte {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 9, Id: 1, Protocol: 17, SrcIP: pod4A, DstIP: pod4B}
		if mod != nil {
			mod(ip)
		}
		return serialize(t, ip, gopacket.Payload(make([]byte, payload)))
	}
	big := pkt(nil, 2980) // 3 fragments at 1450
	badOpts := pkt(func(ip *layers.IPv4) {
		ip.Options = []layers.IPv4Option{{OptionType: 7, OptionLength: 3, OptionData: []byte{4}}}
	}, 2980)
	badOpts[20+1] = 9 // option length past the header
	header.IPv4(badOpts).ComputeChecksum()
	for _, c := range []struct {
		name  string
		src   []byte
		mtu   int
		dst   [][]byte
		want  encap.Verdict
		wantN int
		whole bool // dst[0] holds src unchanged
	}{
		{"ok", big, 1450, fragBufs(3, 1450), encap.OK, 3, false},
		{"fits: copied", pkt(nil, 1000), 1450, fragBufs(1, 1450), encap.OK, 1, true},
		{"fits with DF: copied", pkt(func(ip *layers.IPv4) { ip.Flags = layers.IPv4DontFragment }, 1000), 1450, fragBufs(1, 1450), encap.OK, 1, true},
		{"DF", pkt(func(ip *layers.IPv4) { ip.Flags = layers.IPv4DontFragment }, 2980), 1450, fragBufs(3, 1450), encap.FragDF, 0, false},
		{"too few buffers", big, 1450, fragBufs(2, 1450), encap.FragNoBuffers, 0, false},
		{"no buffers", pkt(nil, 100), 1450, nil, encap.FragNoBuffers, 0, false},
		{"last buffer too small", big, 1450, [][]byte{make([]byte, 1450), make([]byte, 1450), make([]byte, 99)}, encap.FragBufferTooSmall, 0, false},
		{"copy buffer too small", pkt(nil, 1000), 1450, fragBufs(1, 1000), encap.FragBufferTooSmall, 0, false},
		{"mtu 67", big, 67, fragBufs(100, 100), encap.BadArgs, 0, false},
		{"not ipv4", []byte{0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1450, fragBufs(1, 100), encap.FragBadPacket, 0, false},
		{"truncated", big[:100], 1450, fragBufs(3, 1450), encap.FragBadPacket, 0, false},
		{"bad options", badOpts, 1450, fragBufs(3, 1450), encap.FragBadPacket, 0, false},
		{"offset overflow", pkt(func(ip *layers.IPv4) { ip.FragOffset = 8000 }, 2980), 1450, fragBufs(3, 1450), encap.FragBadPacket, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, v := encap.FragmentIPv4(c.src, c.mtu, c.dst)
			if v != c.want || n != c.wantN {
				t.Fatalf("(%d, %v), want (%d, %v)", n, v, c.wantN, c.want)
			}
			if c.whole && !bytes.Equal(c.dst[0], c.src) {
				t.Fatalf("dst[0] is not a copy of src")
			}
			if v != encap.OK {
				for i, d := range c.dst {
					if !bytes.Equal(d, make([]byte, len(d))) {
						t.Fatalf("buffer %d written on %v", i, v)
					}
				}
			}
		})
	}
}

func ExampleFragmentIPv4() {
	ip := make([]byte, 3000)
	header.IPv4(ip).Encode(&header.IPv4Fields{TotalLen: 3000, ID: 7, TTL: 64, Protocol: header.ProtoUDP,
		Src: [4]byte{10, 65, 0, 2}, Dst: [4]byte{10, 65, 1, 3}})
	spare := [][]byte{make([]byte, 2048), make([]byte, 2048), make([]byte, 2048)}
	n, v := encap.FragmentIPv4(ip, 1450, spare)
	fmt.Println(n, v)
	for _, f := range spare[:n] {
		h := header.IPv4(f)
		fmt.Println(len(f), h.FragOffset(), h.FlagsFragOff()&header.IPv4FlagMF != 0)
	}
	// Output:
	// 3 ok
	// 1444 0 true
	// 1444 1424 true
	// 152 2848 false
}
