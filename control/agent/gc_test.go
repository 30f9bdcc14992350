package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/control/ipam"
)

// TestIPAMGarbageCollection: an address whose container never registered
// (its CNI ADD died after the assignment, or its DEL never reached the
// agent) is released; a registered endpoint's address and young
// allocations are kept; the periodic loop does it by itself.
func TestIPAMGarbageCollection(t *testing.T) {
	a, _ := startTablesAgentWith(t, map[string]string{"ipam-gc-interval": "1s", "ipam-gc-grace-period": "2s"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp, err := NewClient(a.Addr("cni")).AddEndpoint(ctx, EndpointRequest{ContainerID: "gc-live", Namespace: "ns",
		Pod: "live", InterfaceName: "tab1", MAC: "02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	leak := func(handle string) netip.Addr {
		as, err := a.ipam.AutoAssign(ctx, ipam.AssignArgs{Handle: handle, Num4: 1})
		if err != nil || len(as.IPv4) != 1 {
			t.Fatalf("assign %s: %v %v", handle, as, err)
		}
		return as.IPv4[0]
	}
	has := func(handle string) bool {
		ips, err := a.ipam.IPsByHandle(ctx, handle)
		if err != nil {
			t.Fatal(err)
		}
		return len(ips) > 0
	}
	leaked := leak("gc-leaked")

	// Young: spared by a grace period.
	st, err := a.CollectGarbage(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Addresses != 0 || !has("gc-leaked") {
		t.Fatalf("young allocation released: %+v", st)
	}
	// Without grace: the leak goes, the registered endpoint stays.
	st, err = a.CollectGarbage(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Addresses != 1 || has("gc-leaked") {
		t.Fatalf("leaked %s not released: %+v", leaked, st)
	}
	if !has("gc-live") {
		t.Fatalf("address of the registered endpoint %v released", resp.IPs)
	}

	// The loop (every 1s, grace 2s) releases a new leak by itself.
	leak("gc-leaked-2")
	deadline := time.Now().Add(15 * time.Second)
	for has("gc-leaked-2") {
		if time.Now().After(deadline) {
			t.Fatal("the periodic garbage collection did not release gc-leaked-2")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !has("gc-live") {
		t.Fatal("the periodic garbage collection released the registered endpoint's address")
	}
	if _, err := NewClient(a.Addr("cni")).DeleteEndpoint(ctx, "gc-live"); err != nil {
		t.Fatal(err)
	}
}
