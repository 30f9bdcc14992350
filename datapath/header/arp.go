package header

// ARP operations.
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARPLen is the length of an ARP packet for IPv4 over Ethernet.
const ARPLen = 28

// ARP is a view of an ARP packet for IPv4 over Ethernet (RFC 826):
//
//	hardware type (2) | protocol type (2) | hlen (1) | plen (1) | op (2)
//	sender MAC (6) | sender IPv4 (4) | target MAC (6) | target IPv4 (4)
type ARP []byte

// IsValid reports whether b is a complete ARP packet for IPv4 over Ethernet.
func (b ARP) IsValid() bool {
	return len(b) >= ARPLen && be.Uint16(b[0:]) == 1 && be.Uint16(b[2:]) == EtherTypeIPv4 &&
		b[4] == 6 && b[5] == 4
}

// Op returns the operation (ARPRequest or ARPReply).
func (b ARP) Op() uint16 { return be.Uint16(b[6:]) }

// SenderMAC returns the sender hardware address.
func (b ARP) SenderMAC() MAC { return MAC(b[8:14]) }

// SenderIP returns the sender protocol address.
func (b ARP) SenderIP() [4]byte { return [4]byte(b[14:18]) }

// TargetMAC returns the target hardware address.
func (b ARP) TargetMAC() MAC { return MAC(b[18:24]) }

// TargetIP returns the target protocol address.
func (b ARP) TargetIP() [4]byte { return [4]byte(b[24:28]) }

// Encode writes a complete ARP packet for IPv4 over Ethernet.
func (b ARP) Encode(op uint16, senderMAC MAC, senderIP [4]byte, targetMAC MAC, targetIP [4]byte) {
	be.PutUint16(b[0:], 1)
	be.PutUint16(b[2:], EtherTypeIPv4)
	b[4], b[5] = 6, 4
	be.PutUint16(b[6:], op)
	copy(b[8:14], senderMAC[:])
	copy(b[14:18], senderIP[:])
	copy(b[18:24], targetMAC[:])
	copy(b[24:28], targetIP[:])
}
