package acl

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tabbynet/tabby/acl/selector"
)

// world is the compile-side model of endpoints as classes and atoms.
type world struct {
	classes    []*class
	classByKey map[string]*class
	atoms      [2][]atom
	atomIdx    [2]map[atom]int32
	regions    [2]*regionSet
	terms      map[string]*term
}

func newWorld() world {
	return world{
		classByKey: map[string]*class{},
		atomIdx:    [2]map[atom]int32{{}, {}},
		regions:    [2]*regionSet{newRegionSet(IPv4), newRegionSet(IPv6)},
		terms:      map[string]*term{},
	}
}

func (w *world) atomOf(f Family, a atom) int32 {
	i := famIdx(f)
	id, ok := w.atomIdx[i][a]
	if !ok {
		id = int32(len(w.atoms[i]))
		w.atoms[i] = append(w.atoms[i], a)
		w.atomIdx[i][a] = id
	}
	return id
}

type epState struct {
	ep  Endpoint
	cls *class
}

type polState struct {
	pp      *pPolicy
	slot    uint32
	version uint64
	// applies caches, per class id, whether the policy selects the class
	// (0 unknown, 1 no, 2 yes).
	applies []uint8
	// namedSides lists, per direction, the remote rule sides that match
	// named ports: their classifiers depend on the ports endpoints declare.
	namedSides [2][]namedSide
}

type namedSide struct {
	rs    *pSide
	feats []namedFeat
}

func (ps *polState) appliesTo(c *class) bool {
	for int(c.id) >= len(ps.applies) {
		ps.applies = append(ps.applies, 0)
	}
	if v := ps.applies[c.id]; v != 0 {
		return v == 2
	}
	pp := ps.pp
	ok := true
	if pp.src.Namespace != "" {
		ok = !c.host && c.ns == pp.src.Namespace
	} else if pp.nsSel != nil {
		ok = pp.nsSel.Matches(c.nsl)
	}
	ok = ok && pp.sel.MatchesMap(c.labels)
	ps.applies[c.id] = 1
	if ok {
		ps.applies[c.id] = 2
	}
	return ok
}

type tierState struct {
	tier    Tier
	slot    uint16
	version uint64
}

// Compiler turns the desired state into Compiled snapshots, incrementally:
// it keeps classifiers between compiles and rebuilds only those whose
// inputs changed (the policies that apply to an endpoint class, the class
// itself, its local region). It is not safe for concurrent use: one
// reconciler goroutine owns it.
//
// Set and Delete methods validate and record a change; an invalid object is
// rejected with a *ValidationError and the previous version of that object
// stays in force. Compile publishes the result of all changes so far.
type Compiler struct {
	opt         Options
	log         *slog.Logger
	w           world
	tiers       map[string]*tierState
	tierNames   []string // by slot
	namespaces  map[string]map[string]string
	endpoints   map[string]*epState
	ipOwner     map[netip.Addr]string
	policies    map[string]*polState
	slots       []string // policy id by slot ("" free)
	freeSlots   []uint32
	cache       map[string]*Classifier
	comboStates map[string]*comboState
	// lastRegions is the last snapshot whose region tables were built; its
	// tables are shared while the CIDRs stay the same.
	lastRegions *regionTables
	logs        *logInterner
	version     uint64
	netsDirty   bool
	ordered     []*polState // policies in evaluation order, nil when stale
	gen         uint64
}

// NewCompiler returns a compiler with an empty state.
func NewCompiler(opt Options) *Compiler {
	c := &Compiler{
		opt:         opt,
		log:         opt.Logger,
		tiers:       map[string]*tierState{},
		namespaces:  map[string]map[string]string{},
		endpoints:   map[string]*epState{},
		ipOwner:     map[netip.Addr]string{},
		policies:    map[string]*polState{},
		cache:       map[string]*Classifier{},
		comboStates: map[string]*comboState{},
		logs:        newLogInterner(),
		netsDirty:   true,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.w = newWorld()
	c.setTier(Tier{Name: DefaultTier, Order: ptr(1e6)}, true)
	return c
}

func ptr[T any](v T) *T { return &v }

// Compile compiles a whole state (the pure, non-incremental entry point).
// Any invalid object fails the compile; the error names it.
func Compile(s *State, opt Options) (*Compiled, error) {
	c := NewCompiler(opt)
	var errs []error
	for _, t := range s.Tiers {
		if err := c.SetTier(t); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range s.Namespaces {
		c.SetNamespace(n)
	}
	for _, e := range s.Endpoints {
		if err := c.SetEndpoint(e); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range s.Policies {
		if err := c.SetPolicy(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("compile policy: %w", errors.Join(errs...))
	}
	cp, _ := c.Compile()
	return cp, nil
}

// SetTier adds or replaces a tier.
func (c *Compiler) SetTier(t Tier) error {
	if err := ValidateTier(&t); err != nil {
		return err
	}
	c.setTier(t, false)
	return nil
}

func (c *Compiler) setTier(t Tier, init bool) {
	c.version++
	ts, ok := c.tiers[t.Name]
	if !ok {
		ts = &tierState{slot: uint16(len(c.tierNames))}
		c.tierNames = append(c.tierNames, t.Name)
		c.tiers[t.Name] = ts
	}
	ts.tier, ts.version = t, c.version
	c.ordered = nil
}

// DeleteTier removes a tier; its policies are ignored until it returns.
// The default tier cannot be removed (deleting it restores its defaults).
func (c *Compiler) DeleteTier(name string) {
	if name == DefaultTier {
		c.setTier(Tier{Name: DefaultTier, Order: ptr(1e6)}, false)
		return
	}
	if ts, ok := c.tiers[name]; ok {
		delete(c.tiers, name)
		c.tierNames[ts.slot] = ""
		c.ordered = nil
	}
}

// SetNamespace adds or replaces a namespace's labels.
func (c *Compiler) SetNamespace(n Namespace) {
	c.namespaces[n.Name] = nsLabels(n.Name, n.Labels)
	c.reclassNamespace(n.Name)
}

// DeleteNamespace forgets a namespace's labels.
func (c *Compiler) DeleteNamespace(name string) {
	delete(c.namespaces, name)
	c.reclassNamespace(name)
}

func (c *Compiler) reclassNamespace(ns string) {
	for _, es := range c.endpoints {
		if !es.ep.Host && es.ep.Namespace == ns {
			c.classify(es)
		}
	}
}

func (c *Compiler) nsLabelsOf(ns string) map[string]string {
	if l, ok := c.namespaces[ns]; ok {
		return l
	}
	return nsLabels(ns, nil)
}

// classify (re)assigns an endpoint's class.
func (c *Compiler) classify(es *epState) {
	nsl := c.nsLabelsOf(es.ep.Namespace)
	key := classKey(&es.ep, nsl)
	cl := c.w.classByKey[key]
	if cl == nil {
		cl = &class{
			id: int32(len(c.w.classes)), key: key, ns: es.ep.Namespace, host: es.ep.Host,
			labels: epLabels(&es.ep), ports: append([]NamedPort(nil), es.ep.Ports...),
		}
		if es.ep.Host {
			cl.nsl = selector.Labels{Global: true}
		} else {
			cl.nsl = selector.Labels{Map: nsl}
		}
		c.w.classes = append(c.w.classes, cl)
		c.w.classByKey[key] = cl
	}
	if es.cls != nil {
		es.cls.refs--
	}
	cl.refs++
	es.cls = cl
}

// SetEndpoint adds or replaces an endpoint (keyed by ID()).
func (c *Compiler) SetEndpoint(e Endpoint) error {
	if err := ValidateEndpoint(&e); err != nil {
		return err
	}
	id := e.ID()
	for i, a := range e.IPs {
		if o, ok := c.ipOwner[a]; ok && o != id {
			return &ValidationError{Kind: "endpoint", Object: id, Field: fmt.Sprintf("ips[%d]", i), Msg: fmt.Sprintf("address %v belongs to %q", a, o)}
		}
	}
	e.Labels = copyMap(e.Labels)
	e.IPs = append([]netip.Addr(nil), e.IPs...)
	e.Ports = append([]NamedPort(nil), e.Ports...)
	es := c.endpoints[id]
	if es == nil {
		es = &epState{}
		c.endpoints[id] = es
	} else {
		for _, a := range es.ep.IPs {
			delete(c.ipOwner, a)
		}
	}
	es.ep = e
	for _, a := range e.IPs {
		c.ipOwner[a] = id
	}
	c.classify(es)
	return nil
}

// DeleteEndpoint removes an endpoint by ID().
func (c *Compiler) DeleteEndpoint(id string) {
	es := c.endpoints[id]
	if es == nil {
		return
	}
	for _, a := range es.ep.IPs {
		delete(c.ipOwner, a)
	}
	es.cls.refs--
	delete(c.endpoints, id)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// SetPolicy adds or replaces a policy (keyed by ID()). An invalid policy is
// rejected and the previous version stays in force.
func (c *Compiler) SetPolicy(p Policy) error {
	pp, err := parsePolicy(&p)
	if err != nil {
		return err
	}
	if _, ok := c.tiers[pp.tier]; !ok {
		return &ValidationError{Kind: "policy", Object: pp.id, Field: "tier", Msg: fmt.Sprintf("unknown tier %q", pp.tier)}
	}
	for d := range pp.rules {
		if len(pp.rules[d]) > 0xffff {
			return &ValidationError{Kind: "policy", Object: pp.id, Field: Direction(d).String(), Msg: "more than 65535 rules"}
		}
	}
	c.version++
	ps := c.policies[pp.id]
	if ps == nil {
		ps = &polState{}
		if n := len(c.freeSlots); n > 0 {
			ps.slot = c.freeSlots[n-1]
			c.freeSlots = c.freeSlots[:n-1]
			c.slots[ps.slot] = pp.id
		} else {
			ps.slot = uint32(len(c.slots))
			c.slots = append(c.slots, pp.id)
		}
		c.policies[pp.id] = ps
	}
	if old := ps.pp; old == nil || netsKey(old) != netsKey(pp) {
		c.netsDirty = true
	}
	ps.pp, ps.version, ps.applies = pp, c.version, nil
	ps.namedSides = [2][]namedSide{}
	for d := range pp.rules {
		remote := sideSrc
		if Direction(d) == Egress {
			remote = sideDst
		}
		for i := range pp.rules[d] {
			r := &pp.rules[d][i]
			if feats := remoteFeats(r, &r.side[remote]); len(feats) > 0 {
				ps.namedSides[d] = append(ps.namedSides[d], namedSide{&r.side[remote], feats})
			}
		}
	}
	c.ordered = nil
	return nil
}

// DeletePolicy removes a policy by ID().
func (c *Compiler) DeletePolicy(id string) {
	ps := c.policies[id]
	if ps == nil {
		return
	}
	delete(c.policies, id)
	c.slots[ps.slot] = ""
	c.freeSlots = append(c.freeSlots, ps.slot)
	c.ordered = nil
	c.netsDirty = true
}

func netsKey(pp *pPolicy) string {
	var b strings.Builder
	for d := range pp.rules {
		for i := range pp.rules[d] {
			for s := range pp.rules[d][i].side {
				sd := &pp.rules[d][i].side[s]
				for _, n := range sd.nets {
					b.WriteString(n.String())
					b.WriteByte(',')
				}
				for _, n := range sd.notNets {
					b.WriteString(n.String())
					b.WriteByte(',')
				}
			}
		}
	}
	return b.String()
}

// Stats describes one compile.
type Stats struct {
	Duration time.Duration
	// Classifiers in the snapshot; Built of them were compiled now,
	// Extended were reused with their address map extended, the rest were
	// reused as they were.
	Classifiers, Built, Extended int
	Endpoints, Classes, Atoms    int
	Policies, Rules              int
	// Entries is the number of match entries compiled now.
	Entries int
	// MemoryBytes estimates the snapshot's lookup memory.
	MemoryBytes int
}

// Compile builds a snapshot from the current state.
func (c *Compiler) Compile() (*Compiled, Stats) {
	start := time.Now()
	var st Stats
	c.gen++
	w := &c.w

	// Regions from every CIDR of every policy.
	regionsChanged := c.netsDirty || c.lastRegions == nil
	if c.netsDirty {
		var pf [2][]netip.Prefix
		for _, ps := range c.policies {
			for d := range ps.pp.rules {
				for i := range ps.pp.rules[d] {
					for s := range ps.pp.rules[d][i].side {
						sd := &ps.pp.rules[d][i].side[s]
						for _, n := range append(sd.nets[:len(sd.nets):len(sd.nets)], sd.notNets...) {
							f := famIdx(famOf(n.Addr()))
							pf[f] = append(pf[f], n)
						}
					}
				}
			}
		}
		for f := range pf {
			w.regions[f].rebuild(pf[f])
		}
		c.netsDirty = false
	}
	// Atoms: every region and every endpoint address.
	for f := range w.regions {
		for _, r := range w.regions[f].ids {
			w.atomOf(Family(4+2*f), atom{class: -1, region: r})
		}
	}
	ids := make([]string, 0, len(c.endpoints))
	for id := range c.endpoints {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	type epIP struct {
		es   *epState
		a    netip.Addr
		atom int32
		reg  int32
	}
	var eips []epIP
	for _, id := range ids {
		es := c.endpoints[id]
		for _, a := range es.ep.IPs {
			f := famOf(a)
			reg := w.regions[famIdx(f)].find(addrU128(a))
			eips = append(eips, epIP{es, a, w.atomOf(f, atom{class: es.cls.id, region: reg}), reg})
		}
	}
	for _, t := range w.terms {
		t.update(w)
	}
	ordered := c.order()

	cp := &Compiled{
		Generation: c.gen,
		tierNames:  append([]string(nil), c.tierNames...),
		slots:      append([]string(nil), c.slots...),
		slotTier:   make([]string, len(c.slots)),
		logs:       c.logs.lists[:len(c.logs.lists):len(c.logs.lists)],
		opt:        c.opt,
	}
	for _, ps := range c.policies {
		cp.slotTier[ps.slot] = ps.pp.tier
	}
	used := map[string]*Classifier{}
	type localKey struct {
		cls, reg int32
		f        Family
		d        Direction
	}
	byLocal := map[localKey]*Classifier{}
	var keyBuf []byte
	for _, x := range eips {
		es := x.es
		epIdx := int32(len(cp.endpoints))
		if len(cp.endpoints) == 0 || cp.endpoints[len(cp.endpoints)-1].ID() != es.ep.ID() {
			cp.endpoints = append(cp.endpoints, es.ep)
		} else {
			epIdx--
		}
		slot := epSlot{ep: epIdx, atom: uint32(x.atom)}
		if c.opt.local(&es.ep) {
			f := famOf(x.a)
			for d := Ingress; d <= Egress; d++ {
				lk := localKey{es.cls.id, x.reg, f, d}
				cl := byLocal[lk]
				if cl == nil {
					keyBuf = c.programKey(keyBuf[:0], ordered, es.cls, x.reg, f, d)
					k := string(keyBuf)
					cl = used[k]
					if cl == nil {
						cl = c.classifierFor(k, ordered, es.cls, x.a, f, d, &st)
						used[k] = cl
					}
					byLocal[lk] = cl
				}
				slot.cls[d] = cl
			}
		}
		cp.addEndpointIP(x.a, slot)
	}
	// Classifiers not used by this snapshot leave the cache.
	for k := range c.cache {
		if used[k] == nil {
			delete(c.cache, k)
		}
	}
	if regionsChanged {
		cp.buildRegions(w)
		c.lastRegions = &regionTables{cp.trie4, cp.reg6, cp.reg6Atom}
	} else {
		cp.ep4.build(cp.pend4)
		cp.ep6.build(cp.pend6)
		cp.pend4, cp.pend6 = nil, nil
		cp.trie4, cp.reg6, cp.reg6Atom = c.lastRegions.trie4, c.lastRegions.reg6, c.lastRegions.reg6Atom
	}
	cp.logs = c.logs.lists[:len(c.logs.lists):len(c.logs.lists)]

	st.Classifiers = len(used)
	st.Endpoints = len(c.endpoints)
	st.Classes = len(w.classes)
	st.Atoms = len(w.atoms[0]) + len(w.atoms[1])
	st.Policies = len(c.policies)
	for _, ps := range c.policies {
		st.Rules += len(ps.pp.rules[0]) + len(ps.pp.rules[1])
	}
	mem := cp.tableBytes()
	for _, cl := range used {
		mem += cl.MemoryBytes()
	}
	st.MemoryBytes = mem
	st.Duration = time.Since(start)
	cp.stats = st
	c.log.Debug("policy compiled", "generation", c.gen, "classifiers", st.Classifiers, "built", st.Built,
		"extended", st.Extended, "duration", st.Duration)
	c.maybeCollect()
	return cp, st
}

// regionTables are the address-to-atom tables of addresses of no endpoint.
type regionTables struct {
	trie4    *trie4
	reg6     []u128
	reg6Atom []uint32
}

// maybeCollect starts over with a fresh world when stale classes and atoms
// (left by label changes and deleted endpoints) outnumber live ones; the
// next compile then rebuilds every classifier.
func (c *Compiler) maybeCollect() {
	live := 0
	for _, cl := range c.w.classes {
		if cl.refs > 0 {
			live++
		}
	}
	if len(c.w.classes) < 1024 || len(c.w.classes) < 4*live {
		return
	}
	c.w = newWorld()
	c.cache = map[string]*Classifier{}
	c.comboStates = map[string]*comboState{}
	c.netsDirty = true
	c.lastRegions = nil
	for _, es := range c.endpoints {
		es.cls = nil
		c.classify(es)
	}
	for _, ps := range c.policies {
		ps.applies = nil
	}
}

// order returns the policies in evaluation order (tier order, then policy
// order, then id), skipping policies of unknown tiers.
func (c *Compiler) order() []*polState {
	if c.ordered != nil {
		return c.ordered
	}
	out := make([]*polState, 0, len(c.policies))
	for _, ps := range c.policies {
		if _, ok := c.tiers[ps.pp.tier]; ok {
			out = append(out, ps)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		ti, tj := c.tiers[out[i].pp.tier], c.tiers[out[j].pp.tier]
		if ti != tj {
			return tierLess(&ti.tier, &tj.tier)
		}
		return policyLess(out[i].pp, out[j].pp)
	})
	c.ordered = out
	return out
}

// programKey identifies everything a classifier depends on.
func (c *Compiler) programKey(b []byte, ordered []*polState, cl *class, reg int32, f Family, d Direction) []byte {
	b = append(b, byte(f), byte(d))
	b = strconv.AppendInt(b, int64(cl.id), 36)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(reg), 36)
	var tier *tierState
	for _, ps := range ordered {
		if !ps.pp.types[d] || !ps.appliesTo(cl) {
			continue
		}
		if t := c.tiers[ps.pp.tier]; t != tier {
			tier = t
			b = append(b, '|')
			b = strconv.AppendUint(b, uint64(t.slot), 36)
			b = append(b, ':')
			b = strconv.AppendUint(b, t.version, 36)
		}
		b = append(b, ';')
		b = strconv.AppendUint(b, uint64(ps.slot), 36)
		b = append(b, ':')
		b = strconv.AppendUint(b, ps.version, 36)
		for _, ns := range ps.namedSides[d] {
			b = append(b, '#')
			b = strconv.AppendInt(b, int64(len(c.combos(ns.rs, ns.feats))), 36)
		}
	}
	return b
}

// classifierFor returns the cached classifier for a key (extended to the
// current atoms) or builds it.
func (c *Compiler) classifierFor(key string, ordered []*polState, cl *class, local netip.Addr, f Family, d Direction, st *Stats) *Classifier {
	nAtoms := len(c.w.atoms[famIdx(f)])
	if old := c.cache[key]; old != nil {
		if n := old.extend(nAtoms); n != nil {
			if n != old {
				st.Extended++
				c.cache[key] = n
			}
			return n
		}
	}
	entries := c.program(ordered, cl, local, f, d)
	for i := range entries {
		for _, t := range entries[i].pos {
			t.update(&c.w)
		}
		for _, t := range entries[i].neg {
			t.update(&c.w)
		}
	}
	cls := buildClassifier(entries, nAtoms, c.logs)
	cls.key = key
	c.cache[key] = cls
	st.Built++
	st.Entries += len(entries)
	return cls
}
