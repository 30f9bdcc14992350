package engine

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// steerSpec is the classification the XDP steering program applies, as
// data: the AF_PACKET filter is compiled from it.
type steerSpec struct {
	pods      []netip.Prefix
	hosts     []netip.Addr
	node      netip.Addr // IPv4, or invalid
	ipip      bool
	vxlan     bool
	vxlanPort uint16
}

// maxFilterLen is the kernel's limit on a classic BPF program
// (BPF_MAXINSNS).
const maxFilterLen = 4096

// acceptLen is what an accepting filter returns: keep the whole frame.
const acceptLen = 0x40000

// packetFilter compiles spec into a classic BPF socket filter that accepts
// exactly the frames the XDP steering program (package afxdp) redirects:
//
//	Ethernet (+ one 802.1Q/802.1ad tag)
//	  IPv4 to the node address: IP-in-IP, or UDP to the VXLAN port, and not
//	       a fragment                             -> accept
//	  IPv4/IPv6 to a host address or the node      -> reject
//	  IPv4/IPv6 to a pod CIDR                      -> accept
//	  anything else (ARP, other IP, truncated)     -> reject
//
// Host addresses are full-length prefixes, so "the longest match is a host
// address" is "the destination is a host address". A truncated frame makes
// a load fail, which rejects it, as the XDP program passes it.
func packetFilter(spec steerSpec) ([]unix.SockFilter, error) {
	var a filterAsm
	a.emit(bpf.LoadAbsolute{Off: 12, Size: 2})
	a.jumpIfEq(0x8100, "tagged")
	a.jumpIfEq(0x88a8, "tagged")
	a.l3(spec, 14, "u_")
	a.label("tagged")
	a.emit(bpf.LoadAbsolute{Off: 16, Size: 2})
	a.l3(spec, 18, "t_")
	a.label("accept")
	a.emit(bpf.RetConstant{Val: acceptLen})
	a.label("reject")
	a.emit(bpf.RetConstant{Val: 0})
	insns, err := a.resolve()
	if err != nil {
		return nil, err
	}
	if len(insns) > maxFilterLen {
		return nil, fmt.Errorf("af_packet filter: %d instructions for %d prefixes exceeds the kernel's %d",
			len(insns), len(spec.pods)+len(spec.hosts), maxFilterLen)
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("af_packet filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// l3 emits the classification of the frame whose EtherType is in A and
// whose network header starts at absolute offset b. Labels are prefixed
// with p so the untagged and tagged copies do not collide.
func (a *filterAsm) l3(spec steerSpec, b uint32, p string) {
	a.jumpIfEq(0x0800, p+"ip4")
	a.jumpIfEq(0x86dd, p+"ip6")
	a.jump("reject")

	// IPv4: version 4, IHL >= 5.
	a.label(p + "ip4")
	a.emit(bpf.LoadAbsolute{Off: b, Size: 1})
	a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jumpIfNe(0x40, "reject")
	a.emit(bpf.LoadAbsolute{Off: b, Size: 1})
	a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f})
	a.emit(bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 5, SkipTrue: 1})
	a.jump("reject")
	if spec.node.IsValid() {
		a.emit(bpf.LoadAbsolute{Off: b + 16, Size: 4})
		a.jumpIfNe(word4(spec.node), p+"lpm4")
		a.emit(bpf.LoadAbsolute{Off: b + 9, Size: 1})
		if spec.ipip {
			a.jumpIfEq(4, p+"ipip")
		}
		if spec.vxlan {
			a.jumpIfEq(17, p+"udp")
		}
		a.jump("reject") // the node's own traffic
		if spec.ipip {
			a.label(p + "ipip")
			a.notFragment(b)
			a.jump("accept")
		}
		if spec.vxlan {
			a.label(p + "udp")
			a.notFragment(b)
			a.emit(bpf.LoadMemShift{Off: b}) // X = IHL * 4
			a.emit(bpf.LoadIndirect{Off: b + 2, Size: 2})
			a.jumpIfEq(uint32(spec.vxlanPort), "accept")
			a.jump("reject")
		}
	}
	a.label(p + "lpm4")
	for _, h := range spec.hosts {
		if h.Is4() {
			a.emit(bpf.LoadAbsolute{Off: b + 16, Size: 4})
			a.jumpIfEq(word4(h), "reject")
		}
	}
	for _, pf := range spec.pods {
		if pf.Addr().Is4() {
			a.prefix(pf, b+16, "accept")
		}
	}
	a.jump("reject")

	// IPv6: version 6.
	a.label(p + "ip6")
	a.emit(bpf.LoadAbsolute{Off: b, Size: 1})
	a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jumpIfNe(0x60, "reject")
	for _, h := range spec.hosts {
		if h.Is6() {
			a.prefix(netip.PrefixFrom(h, 128), b+24, "reject")
		}
	}
	for _, pf := range spec.pods {
		if pf.Addr().Is6() {
			a.prefix(pf, b+24, "accept")
		}
	}
	a.jump("reject")
}

// notFragment rejects an IPv4 fragment (MF set or a fragment offset).
func (a *filterAsm) notFragment(b uint32) {
	a.emit(bpf.LoadAbsolute{Off: b + 6, Size: 2})
	a.emit(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipFalse: 1})
	a.jump("reject")
}

// prefix jumps to target when the address at absolute offset off lies in
// pf, comparing it a 32-bit word at a time.
func (a *filterAsm) prefix(pf netip.Prefix, off uint32, target string) {
	pf = pf.Masked()
	addr := pf.Addr().AsSlice()
	next := a.newLabel()
	for w := 0; w*32 < pf.Bits(); w++ {
		bits := min(pf.Bits()-w*32, 32)
		want := binary.BigEndian.Uint32(addr[4*w:])
		a.emit(bpf.LoadAbsolute{Off: off + uint32(4*w), Size: 4})
		if bits < 32 {
			a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(0) << (32 - bits)})
		}
		a.jumpIfNe(want, next)
	}
	a.jump(target)
	a.label(next)
}

func word4(addr netip.Addr) uint32 {
	b := addr.As4()
	return binary.BigEndian.Uint32(b[:])
}

// filterAsm assembles a classic BPF program with symbolic jump targets.
// Conditional jumps only ever skip one instruction, an unconditional jump
// (32-bit offset) to the label, so programs of any length resolve.
type filterAsm struct {
	insns  []bpf.Instruction
	labels map[string]int
	jumps  map[int]string // instruction index -> target label
	n      int
}

func (a *filterAsm) emit(i bpf.Instruction) { a.insns = append(a.insns, i) }

func (a *filterAsm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.insns)
}

func (a *filterAsm) newLabel() string {
	a.n++
	return fmt.Sprintf("L%d", a.n)
}

// jump emits an unconditional jump to label.
func (a *filterAsm) jump(label string) {
	if a.jumps == nil {
		a.jumps = map[int]string{}
	}
	a.jumps[len(a.insns)] = label
	a.emit(bpf.Jump{})
}

// jumpIfEq jumps to label when A == v.
func (a *filterAsm) jumpIfEq(v uint32, label string) {
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1})
	a.jump(label)
}

// jumpIfNe jumps to label when A != v.
func (a *filterAsm) jumpIfNe(v uint32, label string) {
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: 1})
	a.jump(label)
}

// resolve fills in the jump offsets.
func (a *filterAsm) resolve() ([]bpf.Instruction, error) {
	for at, name := range a.jumps {
		to, ok := a.labels[name]
		if !ok || to <= at {
			return nil, fmt.Errorf("af_packet filter: bad jump to %q", name)
		}
		a.insns[at] = bpf.Jump{Skip: uint32(to - at - 1)}
	}
	return a.insns, nil
}
