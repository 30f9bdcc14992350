package ipam

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tabbynet/tabby/control/datastore/etcd"
	"github.com/tabbynet/tabby/control/datastore/etcd/etcdtest"
)

// BenchmarkAutoAssign measures assignments of one IPv4 address each by
// four nodes with four goroutines each, from a pool that never runs out;
// ns/op is per assignment, for the whole group.
func BenchmarkAutoAssign(b *testing.B) {
	ds := etcdtest.Datastore(b, etcd.Config{})
	if _, err := ds.Create(context.Background(), ippool("big", "10.80.0.0/12", 26, nil)); err != nil {
		b.Fatal(err)
	}
	const nodes, perNode = 4, 4
	insts := make([]*IPAM, nodes)
	for i := range insts {
		a, err := New(ds, Config{Node: fmt.Sprintf("node-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		insts[i] = a
	}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for n := range nodes {
		for range perNode {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if _, err := insts[n].AutoAssign(context.Background(), AssignArgs{Handle: fmt.Sprintf("h-%d", i), Num4: 1,
						Attrs: map[string]string{AttrPodNamespace: "bench", AttrPodName: fmt.Sprintf("pod-%d", i)}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}
