package lpm

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The differential tests of Table4 and Table6 do the same things to both
// tables and compare them with the reference; only the address type of the
// lookups and the table's own invariants differ. family holds what differs,
// and its methods are the tests' shared steps, so that a check added for one
// table is made for the other too.

// updater is the writer side of Table4 and Table6.
type updater interface {
	Insert(p netip.Prefix, nh uint32) error
	Delete(p netip.Prefix) (existed bool, err error)
}

// table is what the differential tests use of Table4 and Table6; A is the
// address type of their lookups.
type table[A any] interface {
	updater
	Lookup(addr A) (nh uint32, ok bool)
	LookupBatch(addrs []A, nhs []uint32)
	Len() int
}

// family is one address family under test: how to make an empty table whose
// invariants are checked when the test ends, how to turn an address into a
// lookup argument, and how to draw a random address to probe.
type family[A any, T table[A]] struct {
	newTable func(testing.TB) T
	key      func(netip.Addr) A
	random   func(*rand.Rand) netip.Addr
}

var (
	ipv4 = family[uint32, *Table4]{
		newTable: newTestTable4,
		key:      addrToU32,
		random:   func(rng *rand.Rand) netip.Addr { return u32ToAddr(rng.Uint32()) },
	}
	ipv6 = family[[16]byte, *Table6]{
		newTable: newTestTable6,
		key:      netip.Addr.As16,
		random:   func(rng *rand.Rand) netip.Addr { return netip.AddrFrom16(randomAddr6(rng)) },
	}
)

// fill builds a table and a reference holding prefixes with random next hops.
func (f family[A, T]) fill(tb testing.TB, rng *rand.Rand, prefixes []netip.Prefix) (T, *reference) {
	tb.Helper()
	tab := f.newTable(tb)
	ref := newReference()
	for _, p := range prefixes {
		nh := nextHop(rng)
		if err := tab.Insert(p, nh); err != nil {
			tb.Fatalf("insert %v: %v", p, err)
		}
		ref.insert(p, nh)
	}
	return tab, ref
}

// check compares Lookup of tab with ref for addr.
func (f family[A, T]) check(tb testing.TB, tab T, ref *reference, addr netip.Addr) bool {
	tb.Helper()
	want, wantOK := ref.lookup(addr)
	got, gotOK := tab.Lookup(f.key(addr))
	if got != want || gotOK != wantOK {
		tb.Errorf("Lookup(%v) = %d, %v; want %d, %v", addr, got, gotOK, want, wantOK)
		return false
	}
	return true
}

// compareBatch checks LookupBatch of tab against the reference, and that it
// writes nothing past len(addrs).
func (f family[A, T]) compareBatch(tb testing.TB, tab T, ref *reference, addrs []netip.Addr) {
	tb.Helper()
	in := make([]A, len(addrs))
	for i, a := range addrs {
		in[i] = f.key(a)
	}
	out := make([]uint32, len(in)+1)
	out[len(in)] = 12345
	tab.LookupBatch(in, out)
	for i, a := range addrs {
		want, ok := ref.lookup(a)
		if !ok {
			want = NoRoute
		}
		if out[i] != want {
			tb.Errorf("LookupBatch: %v = %d, want %d", a, out[i], want)
		}
	}
	if out[len(in)] != 12345 {
		tb.Errorf("LookupBatch wrote past len(addrs)")
	}
}

// lookupInto writes to out the next hops of at most 256 addrs, NoRoute for a
// miss, with one LookupBatch or, if batch is false, with single Lookups.
func (f family[A, T]) lookupInto(tab T, batch bool, addrs []netip.Addr, out []uint32) {
	var in [256]A
	for i, a := range addrs {
		in[i] = f.key(a)
	}
	if batch {
		tab.LookupBatch(in[:len(addrs)], out)
		return
	}
	for i, a := range in[:len(addrs)] {
		nh, ok := tab.Lookup(a)
		if !ok {
			nh = NoRoute
		}
		out[i] = nh
	}
}

// opsCase is a named case of the table-driven tests: operations written as
// "+prefix nh" (insert) and "-prefix" (delete), and addresses to look up
// besides the ones around the touched prefixes.
type opsCase struct {
	name   string
	ops    []string
	probes []string
}

// runCases runs every case on a fresh table and reference, then compares
// single and batch lookups around every touched prefix and at the case's
// probes, and Len.
func (f family[A, T]) runCases(t *testing.T, cases []opsCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := newRand(t, 1)
			tab := f.newTable(t)
			ref := newReference()
			touched := applyOps(t, tc.ops, tab, ref)
			addrs := probes(rng, touched)
			for _, s := range tc.probes {
				addrs = append(addrs, netip.MustParseAddr(s))
			}
			for _, a := range addrs {
				f.check(t, tab, ref, a)
			}
			f.compareBatch(t, tab, ref, addrs)
			if got, want := tab.Len(), ref.len(); got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
		})
	}
}

// applyOps runs ops written as "+prefix nh" (insert) and "-prefix" (delete)
// on both tables, checking Delete's answer against the reference, and returns
// the prefixes it touched.
func applyOps(tb testing.TB, ops []string, tab updater, ref *reference) []netip.Prefix {
	tb.Helper()
	var touched []netip.Prefix
	for _, op := range ops {
		fields := strings.Fields(op[1:])
		p := netip.MustParsePrefix(fields[0])
		touched = append(touched, p)
		switch op[0] {
		case '+':
			nh, err := strconv.ParseUint(fields[1], 10, 32)
			if err != nil {
				tb.Fatalf("op %q: %v", op, err)
			}
			if err := tab.Insert(p, uint32(nh)); err != nil {
				tb.Fatalf("op %q: %v", op, err)
			}
			ref.insert(p, uint32(nh))
		case '-':
			got, err := tab.Delete(p)
			if err != nil {
				tb.Fatalf("op %q: %v", op, err)
			}
			if want := ref.delete(p); got != want {
				tb.Errorf("op %q: existed %v, want %v", op, got, want)
			}
		default:
			tb.Fatalf("bad op %q", op)
		}
	}
	return touched
}

// errorCase is an operation that must fail with an error containing want.
type errorCase struct {
	name string
	run  func() error
	want string
}

// checkErrors runs the cases, which act on tab: each must fail with an error
// of package lpm containing its want, and leave tab empty.
func checkErrors(t *testing.T, tab interface{ Len() int }, cases []errorCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "lpm: ") {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if tab.Len() != 0 {
		t.Errorf("Len() = %d after failed inserts", tab.Len())
	}
}

// compareEverywhere compares tab, which holds the prefixes ps, with ref:
// single and batch lookups at 1<<20 random addresses, then at the first,
// the last and a random address of every prefix. It gives up after 20
// wrong answers.
func (f family[A, T]) compareEverywhere(t *testing.T, tab T, ref *reference, rng *rand.Rand, ps []netip.Prefix) {
	if got, want := tab.Len(), ref.len(); got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	errs := 0
	batch := make([]netip.Addr, 0, 256)
	flush := func() {
		f.compareBatch(t, tab, ref, batch)
		batch = batch[:0]
	}
	probe := func(a netip.Addr) {
		if !f.check(t, tab, ref, a) {
			errs++
			if errs > 20 {
				t.FailNow()
			}
		}
		if batch = append(batch, a); len(batch) == cap(batch) {
			flush()
		}
	}
	for range 1 << 20 {
		probe(f.random(rng))
	}
	for _, p := range ps {
		probe(p.Addr())
		probe(lastAddr(p))
		probe(randomIn(rng, p))
	}
	flush()
}

// deleteAll deletes every prefix of ref from tab and ref in random order,
// comparing the addresses around the next 200 prefixes every `every`
// deletions; Len must end at 0. The caller checks what the table holds then.
func (f family[A, T]) deleteAll(t *testing.T, tab T, ref *reference, rng *rand.Rand, every int) {
	order := ref.prefixes()
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for i, p := range order {
		existed, err := tab.Delete(p)
		if err != nil || !existed {
			t.Fatalf("Delete(%v) = %v, %v", p, existed, err)
		}
		ref.delete(p)
		if i%every == 0 {
			for _, a := range probes(rng, order[i:min(i+200, len(order))]) {
				f.check(t, tab, ref, a)
			}
		}
	}
	if tab.Len() != 0 {
		t.Errorf("Len() = %d after deleting everything", tab.Len())
	}
}

// churn runs 200 steps of 100 random inserts and deletes of prefixes of pool
// on tab and ref, and after each step compares single and batch lookups
// around the touched prefixes and at 200 random addresses, and Len.
func (f family[A, T]) churn(t *testing.T, tab T, ref *reference, rng *rand.Rand, pool []netip.Prefix) {
	for step := range 200 {
		var touched []netip.Prefix
		for range 100 {
			p := pool[rng.IntN(len(pool))]
			touched = append(touched, p)
			if rng.IntN(2) == 0 {
				nh := nextHop(rng)
				if err := tab.Insert(p, nh); err != nil {
					t.Fatal(err)
				}
				ref.insert(p, nh)
			} else {
				existed, err := tab.Delete(p)
				if err != nil {
					t.Fatal(err)
				}
				if want := ref.delete(p); existed != want {
					t.Fatalf("step %d: Delete(%v) existed %v, want %v", step, p, existed, want)
				}
			}
		}
		addrs := probes(rng, touched)
		for range 200 {
			addrs = append(addrs, f.random(rng))
		}
		for _, a := range addrs {
			if !f.check(t, tab, ref, a) {
				t.Fatalf("step %d", step)
			}
		}
		f.compareBatch(t, tab, ref, addrs)
		if tab.Len() != ref.len() {
			t.Fatalf("step %d: Len() = %d, want %d", step, tab.Len(), ref.len())
		}
	}
}

// fuzzOps runs on tab and ref the operations of a fuzz input: each takes size
// bytes of data, which decode turns into an op byte, a prefix and an address.
// op&3 is 0 or 1 to insert the prefix with next hop op>>4, 2 to delete it, 3
// to look the address up. Then it compares the addresses at and just outside
// the ends of every inserted prefix, and Len.
func (f family[A, T]) fuzzOps(t *testing.T, tab T, ref *reference, data []byte, size int,
	decode func(b []byte) (op byte, p netip.Prefix, addr netip.Addr)) {
	var touched []netip.Prefix
	for ; len(data) >= size; data = data[size:] {
		op, p, addr := decode(data[:size])
		switch op & 3 {
		case 0, 1:
			nh := uint32(op >> 4)
			if err := tab.Insert(p, nh); err != nil {
				t.Fatal(err)
			}
			ref.insert(p, nh)
			touched = append(touched, p)
		case 2:
			existed, err := tab.Delete(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := ref.delete(p); existed != want {
				t.Fatalf("Delete(%v) = %v, want %v", p, existed, want)
			}
		case 3:
			f.check(t, tab, ref, addr)
		}
	}
	for _, p := range touched {
		for _, a := range []netip.Addr{p.Addr(), lastAddr(p), p.Addr().Prev(), lastAddr(p).Next()} {
			if a.IsValid() {
				f.check(t, tab, ref, a)
			}
		}
	}
	if tab.Len() != ref.len() {
		t.Errorf("Len() = %d, want %d", tab.Len(), ref.len())
	}
}

// deleteRef deletes from tab every prefix ref holds.
func deleteRef(t *testing.T, tab updater, ref *reference) {
	for _, p := range ref.prefixes() {
		if _, err := tab.Delete(p); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzTable is the table of a fuzz target, shared by its inputs (each input
// deletes what it inserted) because a fresh table per input would make
// fuzzing crawl.
type fuzzTable[T any] struct {
	mu   sync.Mutex
	tab  T
	made bool
}

// run calls body with the shared table, made with newTable if there is none.
// After a failed input the next one starts from a fresh table.
func (ft *fuzzTable[T]) run(t *testing.T, newTable func() T, body func(tab T)) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if !ft.made {
		ft.tab, ft.made = newTable(), true
	}
	defer func() {
		if t.Failed() {
			ft.made = false
		}
	}()
	body(ft.tab)
}
