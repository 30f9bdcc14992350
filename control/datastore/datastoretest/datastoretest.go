// Package datastoretest holds behavioural tests that every datastore backend
// must pass, so the etcd backend (in-process etcd) and the Kubernetes backend
// (real kube-apiserver, in the test/ module) are checked by the same code.
package datastoretest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/datastore"
	"github.com/tabbynet/tabby/control/resources"
)

// CASConcurrent has goroutines increment one counter (an IPAMHandle) by
// read-modify-write with compare-and-swap; no increment may be lost. It
// returns how many workers saw a conflict, for the caller to report or
// require.
func CASConcurrent(t *testing.T, d datastore.Datastore) (conflicted, workers int) {
	t.Helper()
	ctx := context.Background()
	h := &resources.IPAMHandle{ObjectMeta: resources.ObjectMeta{Name: "counter"},
		Spec: resources.IPAMHandleSpec{HandleID: "counter", Block: map[string]int{"10.0.0.0/26": 1}}}
	if _, err := d.Create(ctx, h); err != nil {
		t.Fatal(err)
	}
	const nWorkers, each = 8, 25
	var conflicts sync.Map
	var wg sync.WaitGroup
	start := time.Now()
	for w := range nWorkers {
		wg.Go(func() {
			for range each {
				for {
					cur, err := datastore.Get[*resources.IPAMHandle](ctx, d, "counter")
					if err != nil {
						t.Error(err)
						return
					}
					cur.Spec.Block["10.0.0.0/26"]++
					_, err = d.Update(ctx, cur)
					if err == nil {
						break
					}
					if !datastore.IsConflict(err) {
						t.Error(err)
						return
					}
					conflicts.Store(w, true)
				}
			}
		})
	}
	wg.Wait()
	got, err := datastore.Get[*resources.IPAMHandle](ctx, d, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if n := got.Spec.Block["10.0.0.0/26"]; n != 1+nWorkers*each {
		t.Fatalf("counter %d, want %d", n, 1+nWorkers*each)
	}
	conflicts.Range(func(any, any) bool { conflicted++; return true })
	t.Logf("%d increments in %s; %d of %d workers saw conflicts",
		nWorkers*each, time.Since(start).Round(time.Millisecond), conflicted, nWorkers)
	return conflicted, nWorkers
}
