package conntrack

import (
	"math/rand/v2"
	"testing"
	"time"
)

func key4(src, dst uint32, sp, dp uint16, proto uint8) (Key, bool) {
	return MakeKey(false, proto, 0, uint64(src), 0, uint64(dst), sp, dp)
}

func TestBothDirections(t *testing.T) {
	tb := New[int](Config{Buckets: 16})
	k, sw := key4(1, 2, 1000, 80, 6)
	tb.Insert(&k, sw, flagSYN, 0, 7)
	r, rsw := key4(2, 1, 80, 1000, 6)
	if r != k || rsw == sw {
		t.Fatalf("reply key %v/%v, want %v/%v", r, rsw, k, !sw)
	}
	e := tb.Lookup(&r, 1)
	if e == nil || e.Val != 7 || e.State != StateSynSent {
		t.Fatalf("lookup reply: %+v", e)
	}
	tb.Update(e, rsw, flagSYN|flagACK, 1)
	if e.State != StateEstablished || e.Expires != 1+int64(time.Hour) {
		t.Fatalf("after SYN-ACK: %v %d", e.State, e.Expires)
	}
	tb.Update(e, sw, flagFIN|flagACK, 2)
	tb.Update(e, rsw, flagFIN|flagACK, 3)
	if e.State != StateClosed || e.Expires != 3+int64(10*time.Second) {
		t.Fatalf("after FINs: %v", e.State)
	}
	if tb.Lookup(&k, 3+int64(10*time.Second)) != nil {
		t.Fatal("closed flow not expired")
	}
	if c := tb.Counters(); c.Entries != 0 || c.Expired != 1 || c.Inserts != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestBoundedEviction(t *testing.T) {
	tb := New[int](Config{Buckets: 4})
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		k, sw := key4(r.Uint32(), r.Uint32(), 1, 2, 17)
		if tb.Lookup(&k, int64(i)) == nil {
			tb.Insert(&k, sw, 0, int64(i), i)
		}
	}
	c := tb.Counters()
	if c.Entries != uint64(tb.Capacity()) || c.Evictions != 1000-uint64(tb.Capacity()) {
		t.Fatalf("counters %+v capacity %d", c, tb.Capacity())
	}
}

func TestSweep(t *testing.T) {
	tb := New[int](Config{Buckets: 64})
	for i := uint32(0); i < 100; i++ {
		k, sw := key4(i, 1000+i, 1, 2, 1)
		tb.Insert(&k, sw, 0, 0, 0)
	}
	freed := 0
	for i := 0; i < 64; i++ {
		freed += tb.Sweep(int64(6*time.Second), 1)
	}
	if freed != 100 || tb.Counters().Entries != 0 {
		t.Fatalf("freed %d, %+v", freed, tb.Counters())
	}
	tb.Publish()
	if tb.Stats().Expired != 100 {
		t.Fatal("published stats")
	}
}

func TestNoAllocs(t *testing.T) {
	tb := New[[4]uint64](Config{Buckets: 1024})
	k, sw := key4(1, 2, 3, 4, 6)
	tb.Insert(&k, sw, flagSYN, 0, [4]uint64{})
	n := testing.AllocsPerRun(1000, func() {
		e := tb.Lookup(&k, 1)
		tb.Update(e, sw, flagACK, 1)
		tb.Sweep(1, 4)
	})
	if n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func BenchmarkLookupHit(b *testing.B) {
	tb := New[[4]uint64](Config{Buckets: 1 << 14})
	keys := make([]Key, 50000)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range keys {
		keys[i], _ = key4(r.Uint32(), r.Uint32(), uint16(r.Uint32()), 80, 6)
		tb.Insert(&keys[i], false, flagSYN, 0, [4]uint64{})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tb.Lookup(&keys[i], 1)
		i++
		if i == len(keys) {
			i = 0
		}
	}
}

func TestDeleteFunc(t *testing.T) {
	tb := New[int](Config{Buckets: 16})
	for i := range 20 {
		k, _ := MakeKey(false, 17, 0, uint64(i%4), 0, 100, uint16(i), 53)
		tb.Insert(&k, false, 0, 0, i)
	}
	n := tb.DeleteFunc(func(k *Key) bool { return k.ALo == 1 || k.BLo == 1 })
	if n != 5 {
		t.Fatalf("deleted %d, want 5", n)
	}
	if c := tb.Counters(); c.Entries != 15 || c.Deleted != 5 {
		t.Fatalf("counters %+v", c)
	}
	for i := range 20 {
		k, _ := MakeKey(false, 17, 0, uint64(i%4), 0, 100, uint16(i), 53)
		if got := tb.Lookup(&k, 0) != nil; got != (i%4 != 1) {
			t.Fatalf("flow %d present=%v", i, got)
		}
	}
}
