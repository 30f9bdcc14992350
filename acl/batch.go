package acl

// batchChunk is how many packets CheckBatch carries through each stage at
// once (stack arrays; no allocation).
const batchChunk = 16

// CheckBatch runs Check for every packet; out must be at least as long as
// pkts. It works in stages over chunks of packets (endpoint lookups, then
// class computations, then the matrix and result reads) so that the cache
// misses of different packets overlap instead of queueing behind each
// other.
func (c *Compiled) CheckBatch(pkts []Packet, out []Check) {
	out = out[:len(pkts)]
	for base := 0; base < len(pkts); base += batchChunk {
		n := min(batchChunk, len(pkts)-base)
		c.checkChunk(pkts[base:base+n], out[base:base+n])
	}
}

func (c *Compiled) checkChunk(pkts []Packet, out []Check) {
	var ss, ds [batchChunk]*epSlot
	var cell [batchChunk][2]cellRef
	// Stage 1: endpoint lookups.
	for i := range pkts {
		p := &pkts[i]
		if p.Family == IPv4 {
			ss[i], ds[i] = c.ep4.lookup(p.Src4), c.ep4.lookup(p.Dst4)
		} else {
			ss[i], ds[i] = c.ep6.lookup(&p.Src6), c.ep6.lookup(&p.Dst6)
		}
	}
	// Stage 2: per-field classes and the matrix cell of each direction.
	for i := range pkts {
		p := &pkts[i]
		r := &out[i]
		*r = Check{Verdict: Allowed, SrcEndpoint: -1, DstEndpoint: -1}
		cell[i] = [2]cellRef{}
		if s := ss[i]; s != nil {
			r.SrcEndpoint = s.ep
			if cl := s.cls[Egress]; cl != nil {
				cell[i][Egress] = cellRef{cl, cl.cellIndex(c.dstAtom(p, ds[i]), p.Proto, p.SrcPort, p.DstPort)}
			}
		}
		if d := ds[i]; d != nil {
			r.DstEndpoint = d.ep
			if cl := d.cls[Ingress]; cl != nil {
				cell[i][Ingress] = cellRef{cl, cl.cellIndex(c.srcAtom(p, ss[i]), p.Proto, p.SrcPort, p.DstPort)}
			}
		}
	}
	// Stage 3: matrix and results.
	for i := range pkts {
		r := &out[i]
		if x := cell[i][Egress]; x.cl != nil {
			r.Egress = x.cl.result(x.idx)
			r.Verdict = r.Egress.Verdict
		}
		if x := cell[i][Ingress]; x.cl != nil {
			r.Ingress = x.cl.result(x.idx)
			if r.Ingress.Verdict == Denied {
				r.Verdict = Denied
			}
		}
	}
}

// cellRef is a classifier and the index of a matrix cell.
type cellRef struct {
	cl  *Classifier
	idx uint32
}

// result returns the result in matrix cell idx.
func (c *Classifier) result(idx uint32) Result {
	if c.matrix32 != nil {
		return c.results[c.matrix32[idx]]
	}
	return c.results[c.matrix16[idx]]
}
