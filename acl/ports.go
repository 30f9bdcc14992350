package acl

import "sort"

// prange is an inclusive range of 16-bit values (ports, ICMP type<<8|code).
type prange struct{ lo, hi uint16 }

var anyPorts = []prange{{0, 0xffff}}

// normRanges sorts and merges ranges.
func normRanges(rs []prange) []prange {
	if len(rs) == 0 {
		return nil
	}
	rs = append([]prange(nil), rs...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo < rs[j].lo })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if uint32(r.lo) <= uint32(last.hi)+1 {
			if r.hi > last.hi {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// subRanges returns a minus b (both normalised).
func subRanges(a, b []prange) []prange {
	var out []prange
	for _, r := range a {
		lo := uint32(r.lo)
		hi := uint32(r.hi)
		for _, x := range b {
			if uint32(x.hi) < lo || uint32(x.lo) > hi {
				continue
			}
			if uint32(x.lo) > lo {
				out = append(out, prange{uint16(lo), x.lo - 1})
			}
			lo = uint32(x.hi) + 1
			if lo > hi {
				break
			}
		}
		if lo <= hi {
			out = append(out, prange{uint16(lo), uint16(hi)})
		}
	}
	return out
}

// interRanges returns a ∩ b (both normalised).
func interRanges(a, b []prange) []prange {
	var out []prange
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		lo := max(a[i].lo, b[j].lo)
		hi := min(a[i].hi, b[j].hi)
		if lo <= hi {
			out = append(out, prange{lo, hi})
		}
		if a[i].hi < b[j].hi {
			i++
		} else {
			j++
		}
	}
	return out
}

func inRanges(rs []prange, v uint16) bool {
	for _, r := range rs {
		if v >= r.lo && v <= r.hi {
			return true
		}
	}
	return false
}

// portTable maps a 16-bit value to a class in two loads: the high byte picks
// a 256-entry chunk (chunks are shared when equal).
type portTable struct {
	hi     [256]uint32 // chunk offset into chunks
	chunks []uint16
}

func (t *portTable) lookup(v uint16) uint16 { return t.chunks[t.hi[v>>8]+uint32(v&0xff)] }

// buildPortTable builds a table from sorted interval starts (starts[0] ==
// 0) and their classes.
func buildPortTable(starts []uint32, cls []uint16) *portTable {
	t := &portTable{}
	uniform := map[uint16]uint32{}
	k := 0
	for h := uint32(0); h < 256; h++ {
		base := h << 8
		for k+1 < len(starts) && starts[k+1] <= base {
			k++
		}
		if k+1 >= len(starts) || starts[k+1] > base+255 {
			off, ok := uniform[cls[k]]
			if !ok {
				off = uint32(len(t.chunks))
				for l := 0; l < 256; l++ {
					t.chunks = append(t.chunks, cls[k])
				}
				uniform[cls[k]] = off
			}
			t.hi[h] = off
			continue
		}
		t.hi[h] = uint32(len(t.chunks))
		j := k
		for l := uint32(0); l < 256; l++ {
			for j+1 < len(starts) && starts[j+1] <= base+l {
				j++
			}
			t.chunks = append(t.chunks, cls[j])
		}
	}
	return t
}
