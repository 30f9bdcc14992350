package afxdp

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Steering statistics, one per-CPU counter each (the stats map's keys).
const (
	// StatPassOther: not IPv4/IPv6 (ARP, LLDP, ...), or a malformed IP
	// header, passed to the kernel.
	StatPassOther = iota
	// StatPassHost: IP traffic the dataplane does not own (the host's own
	// addresses, anything outside the pod CIDRs), passed.
	StatPassHost
	// StatPassTruncated: frames shorter than the headers they announce,
	// passed for the kernel to drop and count.
	StatPassTruncated
	// StatPassFragment: IPv4 fragments of tunnel traffic to this node,
	// passed (the dataplane does not reassemble).
	StatPassFragment
	// StatRedirectPod: destination inside a pod CIDR, redirected.
	StatRedirectPod
	// StatRedirectIPIP: IP-in-IP to the node address, redirected.
	StatRedirectIPIP
	// StatRedirectVXLAN: VXLAN (UDP to the configured port) to the node
	// address, redirected.
	StatRedirectVXLAN
	// StatNoSocket: owned traffic on a queue without a socket in the
	// XSKMAP, passed to the kernel.
	StatNoSocket
	numStats
)

// Classes stored as LPM trie values.
const (
	classPod  = 1 // redirect to the dataplane
	classHost = 2 // the host's own address: pass
)

// steerConfig is the value of the one-entry config array, read by the
// program with a direct map-value load. Addresses and port are in network
// byte order so the program compares them with raw packet loads.
type steerConfig struct {
	Node4     [4]byte
	VXLANPort [2]byte
	Flags     uint8
	_         uint8
	_         [8]byte
}

const (
	flagIPIP  = 1 << 0
	flagVXLAN = 1 << 1
)

type lpmKey4 struct {
	Prefixlen uint32
	Addr      [4]byte
}

type lpmKey6 struct {
	Prefixlen uint32
	Addr      [16]byte
}

// raw16 returns the value a 16-bit load of the big-endian bytes of v
// yields on this machine, for comparisons with packet fields.
func raw16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// XDP actions and xdp_md offsets.
const (
	xdpPass     = 2
	xdpRedirect = 4

	mdData         = 0
	mdDataEnd      = 4
	mdRxQueueIndex = 16
)

// steeringProgram returns the steering program for one interface:
//
//	Ethernet (+ one 802.1Q/802.1ad tag)
//	  IPv4 to the node address, proto 4 (IPIP) or UDP to the VXLAN port,
//	       not a fragment                      -> redirect
//	  IPv4/IPv6 destination whose longest match in dst4/dst6 is a pod
//	       CIDR (not a host address)           -> redirect
//	  anything else, or a truncated frame      -> XDP_PASS
//
// A redirect goes to the XSKMAP entry of the frame's RX queue; with no
// socket there, bpf_redirect_map falls back to XDP_PASS. Each decision
// bumps a per-CPU counter. With workload set (an interface facing pods),
// tunnel traffic is never redirected: the tunnel flags read as zero, so IP-in-IP and
// VXLAN to the node address take the host-address path (XDP_PASS).
//
// Registers: R6 ctx, R7 stat index, R8 return value, R9 L3 header.
func steeringProgram(xsks, stats, dst4, dst6, config *ebpf.Map, workload bool) asm.Instructions {
	fragMask := raw16(0x3fff)                             // MF flag and fragment offset
	loadFlags := asm.LoadMem(asm.R5, asm.R4, 6, asm.Byte) // flags
	if workload {
		loadFlags = asm.Mov.Imm(asm.R5, 0)
	}
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "truncated"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.Add.Imm(asm.R9, 14),
		asm.JEq.Imm(asm.R5, raw16(0x8100), "vlan"),
		asm.JEq.Imm(asm.R5, raw16(0x88a8), "vlan"),
		asm.Ja.Label("l3"),

		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("vlan"),
		asm.Add.Imm(asm.R4, 18),
		asm.JGT.Reg(asm.R4, asm.R3, "truncated"),
		asm.LoadMem(asm.R5, asm.R2, 16, asm.Half),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.Add.Imm(asm.R9, 18),

		asm.JEq.Imm(asm.R5, raw16(0x0800), "ip4").WithSymbol("l3"),
		asm.JEq.Imm(asm.R5, raw16(0x86dd), "ip6"),
		asm.Ja.Label("pass_other"),

		// IPv4.
		asm.Mov.Reg(asm.R4, asm.R9).WithSymbol("ip4"),
		asm.Add.Imm(asm.R4, 20),
		asm.JGT.Reg(asm.R4, asm.R3, "truncated"),
		asm.LoadMem(asm.R1, asm.R9, 0, asm.Byte),
		asm.Mov.Reg(asm.R0, asm.R1),
		asm.RSh.Imm(asm.R0, 4),
		asm.JNE.Imm(asm.R0, 4, "pass_other"),
		asm.And.Imm(asm.R1, 0x0f),
		asm.JLT.Imm(asm.R1, 5, "pass_other"),
		asm.LoadMapValue(asm.R4, config.FD(), 0),
		asm.LoadMem(asm.R5, asm.R4, 0, asm.Word), // node address
		asm.JEq.Imm(asm.R5, 0, "lpm4"),
		asm.LoadMem(asm.R0, asm.R9, 16, asm.Word), // destination
		asm.JNE.Reg(asm.R0, asm.R5, "lpm4"),
		asm.LoadMem(asm.R0, asm.R9, 9, asm.Byte), // protocol
		loadFlags,
		asm.JEq.Imm(asm.R0, 4, "ipip"),
		asm.JEq.Imm(asm.R0, 17, "udp4"),
		asm.Ja.Label("lpm4"),

		asm.Mov.Reg(asm.R0, asm.R5).WithSymbol("ipip"),
		asm.And.Imm(asm.R0, flagIPIP),
		asm.JEq.Imm(asm.R0, 0, "lpm4"),
		asm.LoadMem(asm.R0, asm.R9, 6, asm.Half),
		asm.JSet.Imm(asm.R0, fragMask, "fragment"),
		asm.Mov.Imm(asm.R7, StatRedirectIPIP),
		asm.Ja.Label("redirect"),

		asm.Mov.Reg(asm.R0, asm.R5).WithSymbol("udp4"),
		asm.And.Imm(asm.R0, flagVXLAN),
		asm.JEq.Imm(asm.R0, 0, "lpm4"),
		asm.LoadMem(asm.R0, asm.R9, 6, asm.Half),
		asm.JSet.Imm(asm.R0, fragMask, "fragment"),
		asm.LSh.Imm(asm.R1, 2), // IHL in bytes, 20..60
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.Add.Imm(asm.R0, 8),
		asm.JGT.Reg(asm.R0, asm.R3, "truncated"),
		asm.LoadMem(asm.R0, asm.R2, 2, asm.Half), // UDP destination port
		asm.LoadMem(asm.R5, asm.R4, 4, asm.Half),
		asm.JNE.Reg(asm.R0, asm.R5, "lpm4"),
		asm.Mov.Imm(asm.R7, StatRedirectVXLAN),
		asm.Ja.Label("redirect"),

		asm.StoreImm(asm.RFP, -8, 32, asm.Word).WithSymbol("lpm4"),
		asm.LoadMem(asm.R0, asm.R9, 16, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, dst4.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.Ja.Label("classify"),

		// IPv6.
		asm.Mov.Reg(asm.R4, asm.R9).WithSymbol("ip6"),
		asm.Add.Imm(asm.R4, 40),
		asm.JGT.Reg(asm.R4, asm.R3, "truncated"),
		asm.LoadMem(asm.R0, asm.R9, 0, asm.Byte),
		asm.RSh.Imm(asm.R0, 4),
		asm.JNE.Imm(asm.R0, 6, "pass_other"),
		asm.StoreImm(asm.RFP, -24, 128, asm.Word),
		asm.LoadMem(asm.R0, asm.R9, 24, asm.Word),
		asm.StoreMem(asm.RFP, -20, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R9, 28, asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R9, 32, asm.Word),
		asm.StoreMem(asm.RFP, -12, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R9, 36, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, dst6.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),

		asm.Mov.Imm(asm.R7, StatPassHost).WithSymbol("classify"),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, classPod, "pass"),
		asm.Mov.Imm(asm.R7, StatRedirectPod),

		asm.LoadMapPtr(asm.R1, xsks.FD()).WithSymbol("redirect"),
		asm.LoadMem(asm.R2, asm.R6, mdRxQueueIndex, asm.Word),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.JEq.Imm(asm.R0, xdpRedirect, "count"),
		asm.Mov.Imm(asm.R7, StatNoSocket),
		asm.Ja.Label("count"),

		asm.Mov.Imm(asm.R7, StatPassTruncated).WithSymbol("truncated"),
		asm.Ja.Label("pass"),
		asm.Mov.Imm(asm.R7, StatPassFragment).WithSymbol("fragment"),
		asm.Ja.Label("pass"),
		asm.Mov.Imm(asm.R7, StatPassOther).WithSymbol("pass_other"),
		asm.Mov.Imm(asm.R8, xdpPass).WithSymbol("pass"),

		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, stats.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "return"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R8).WithSymbol("return"),
		asm.Return(),
	}
}
