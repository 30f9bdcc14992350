package encap

import "github.com/tabbynet/tabby/datapath/header"

// IPv4 option types with special meaning to the option walk.
const (
	ipOptEOL    = 0
	ipOptNOP    = 1
	ipOptCopied = 0x80 // the copied flag: the option goes into every fragment
)

// FragmentIPv4 splits the IPv4 packet src (starting at its IP header, link
// padding after its total length ignored) into fragments of at most mtu
// bytes (RFC 791), written into the caller's buffers dst[0], dst[1], … It
// returns the number of fragments with OK; each dst[i] used is resliced to
// its fragment's length. A packet that already fits is copied into dst[0].
//
// Every fragment carries a copy of the header with the same ID, its total
// length, the fragment offset (a multiple of 8 bytes, added to src's own
// offset when src is itself a fragment), MF on all but the last (which
// keeps src's MF) and a fresh checksum. Options without the copied flag
// appear in the first fragment only and are replaced by NOPs in the others,
// so every fragment has the same header length (as Linux does).
//
// It declines with FragDF when src has DF set (answer with FragNeededIPv4),
// FragBadPacket when src is not a valid IPv4 packet, its options are
// malformed or (src being a fragment) the offsets would overflow, BadArgs when mtu is outside 68–65535, FragNoBuffers when dst
// holds fewer buffers than fragments, and FragBufferTooSmall when one is
// shorter than its fragment; then nothing has been written. dst buffers
// must not overlap src. FragmentIPv4 does not allocate.
func FragmentIPv4(src []byte, mtu int, dst [][]byte) (n int, v Verdict) {
	ip := header.IPv4(src)
	if !ip.IsValid() {
		return 0, FragBadPacket
	}
	if mtu < minIPv4MTU || mtu > maxIPv4MTU {
		return 0, BadArgs
	}
	ihl, tl := ip.HeaderLen(), int(ip.TotalLen())
	if tl <= mtu {
		if len(dst) < 1 {
			return 0, FragNoBuffers
		}
		if len(dst[0]) < tl {
			return 0, FragBufferTooSmall
		}
		dst[0] = dst[0][:copy(dst[0], src[:tl])]
		return 1, OK
	}
	if ip.DF() {
		return 0, FragDF
	}
	if !validOptions(src[header.IPv4MinLen:ihl]) {
		return 0, FragBadPacket
	}
	chunk := (mtu - ihl) &^ 7 // ≥ 8: ihl ≤ 60, mtu ≥ 68
	data := src[ihl:tl]
	count := (len(data) + chunk - 1) / chunk
	if count > len(dst) {
		return 0, FragNoBuffers
	}
	for i := range count {
		size := min(chunk, len(data)-i*chunk)
		if len(dst[i]) < ihl+size {
			return 0, FragBufferTooSmall
		}
	}
	flags := ip.FlagsFragOff()
	baseOff := flags & 0x1fff // in 8-byte units
	if int(baseOff)+(count-1)*chunk/8 > 0x1fff {
		return 0, FragBadPacket // the offsets would not fit 13 bits
	}
	lastMF := flags & header.IPv4FlagMF
	flags &^= header.IPv4FlagMF | 0x1fff
	for i := range count {
		size := min(chunk, len(data)-i*chunk)
		f := dst[i][:ihl+size]
		copy(f, src[:ihl])
		if i > 0 {
			nopUncopiedOptions(f[header.IPv4MinLen:ihl])
		}
		copy(f[ihl:], data[i*chunk:i*chunk+size])
		w := flags | (baseOff + uint16(i*chunk/8))
		if i < count-1 {
			w |= header.IPv4FlagMF
		} else {
			w |= lastMF
		}
		h := header.IPv4(f)
		h.SetTotalLen(uint16(ihl + size))
		be.PutUint16(f[6:], w)
		h.ComputeChecksum()
		dst[i] = f
	}
	return count, OK
}

// validOptions reports whether the IPv4 options opts can be walked: every
// option other than EOL and NOP has a length byte of at least 2 that stays
// within opts.
func validOptions(opts []byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case ipOptEOL:
			return true
		case ipOptNOP:
			i++
		default:
			if i+1 >= len(opts) {
				return false
			}
			l := int(opts[i+1])
			if l < 2 || i+l > len(opts) {
				return false
			}
			i += l
		}
	}
	return true
}

// nopUncopiedOptions replaces every option without the copied flag by NOPs.
// The options have been checked by validOptions.
func nopUncopiedOptions(opts []byte) {
	for i := 0; i < len(opts); {
		switch t := opts[i]; t {
		case ipOptEOL:
			return
		case ipOptNOP:
			i++
		default:
			l := int(opts[i+1])
			if t&ipOptCopied == 0 {
				for j := i; j < i+l; j++ {
					opts[j] = ipOptNOP
				}
			}
			i += l
		}
	}
}
