package afxdp

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datapath/afxdp/nstest"
)

// TestSteering checks, in native and generic mode, that the host's
// traffic reaches the kernel (ARP is answered, a TCP listener on port 179
// accepts) while pod-CIDR traffic and tunnel traffic to the node address go
// to the socket, and that Close leaves no XDP program on the interface.
func TestSteering(t *testing.T) {
	for _, mode := range []XDPMode{XDPDriver, XDPGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			r := newRig(t)
			dpIf, peerIf := r.link(t, "0", 1500, 0)
			r.DP.IP(t, "addr", "add", "192.168.77.1/24", "dev", dpIf)
			r.Peer.IP(t, "addr", "add", "192.168.77.2/24", "dev", peerIf)
			u := newTestUMEM(t, UMEMConfig{Frames: 1024, FrameSize: 2048})
			st := newTestSteering(t, "10.244.1.0/24", "fd00:244::/64")
			must(t, st.SetNodeAddress(netip.MustParseAddr("192.168.77.1")))
			must(t, st.SetHostAddresses([]netip.Addr{netip.MustParseAddr("192.168.77.1"), netip.MustParseAddr("10.244.1.1")}))
			if r.DP.XDPAttached(t, dpIf) {
				t.Fatal("XDP program attached before the test attached one")
			}
			s, a := setupSocket(t, r, u, st, dpIf, 0, mode, 0)
			if a.Mode() != mode {
				t.Fatalf("attached in %s mode, asked %s", a.Mode(), mode)
			}
			if !r.DP.XDPAttached(t, dpIf) {
				t.Fatal("ip link shows no XDP program")
			}

			// BGP: the kernel answers ARP for 192.168.77.1 and a listener
			// on tcp/179 in the dataplane namespace accepts.
			var ln net.Listener
			r.do(t, func() (err error) { ln, err = net.Listen("tcp4", "192.168.77.1:179"); return err })
			defer ln.Close()
			accepted := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					_, err = c.Write([]byte("OPEN"))
					c.Close()
				}
				accepted <- err
			}()
			var reply [4]byte
			err := r.Peer.Do(func() error {
				c, err := net.DialTimeout("tcp4", "192.168.77.1:179", 3*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				_, err = c.Read(reply[:])
				return err
			})
			if err != nil || string(reply[:]) != "OPEN" {
				t.Fatalf("BGP session to the host: %v (%q)", err, reply)
			}
			if err := <-accepted; err != nil {
				t.Fatal(err)
			}
			neigh := r.Peer.IP(t, "neigh", "show", "192.168.77.1")
			if neigh == "" {
				t.Fatal("peer has no ARP entry for the host: ARP was not answered")
			}
			if got := receive(t, []*Socket{s}, 1, 100*time.Millisecond, nil); len(got) != 0 {
				t.Fatalf("host traffic reached the socket: %d frames", len(got))
			}

			raw := nstest.OpenRaw(t, r.Peer, peerIf)
			cases := []struct {
				name  string
				frame []byte
				owned bool
			}{
				{"pod v4", udpFrame(t, "10.244.2.5", "10.244.1.7", 1, 2, []byte("c-pod4")), true},
				{"pod v6", udpFrame(t, "fd00:245::5", "fd00:244::7", 1, 2, []byte("c-pod6")), true},
				{"vxlan to node", udpFrame(t, "192.168.77.2", "192.168.77.1", 33333, 4789, []byte("c-vxlan")), true},
				{"ipip to node", ipipFrame(t, "192.168.77.2", "192.168.77.1", "10.244.2.5", "10.244.1.7"), true},
				{"udp 4790 to node", udpFrame(t, "192.168.77.2", "192.168.77.1", 33333, 4790, []byte("c-4790")), false},
				{"ipip elsewhere", ipipFrame(t, "192.168.77.2", "192.168.77.9", "10.244.2.5", "10.244.1.7"), false},
				{"host address in pod cidr", udpFrame(t, "10.244.2.5", "10.244.1.1", 1, 2, []byte("c-host")), false},
				{"outside pod cidr", udpFrame(t, "10.244.2.5", "10.245.1.7", 1, 2, []byte("c-out")), false},
				{"v6 outside", udpFrame(t, "fd00:245::5", "fd00:245::7", 1, 2, []byte("c-out6")), false},
			}
			for _, c := range cases {
				before, _ := a.Stats()
				must(t, raw.Send(c.frame))
				got := receive(t, []*Socket{s}, 1, 300*time.Millisecond, nil)
				after, _ := a.Stats()
				redirected := after[StatRedirectPod] + after[StatRedirectIPIP] + after[StatRedirectVXLAN] -
					before[StatRedirectPod] - before[StatRedirectIPIP] - before[StatRedirectVXLAN]
				if c.owned && (len(got) != 1 || string(got[0]) != string(c.frame) || redirected != 1) {
					t.Errorf("%s: socket got %d frames (redirected %d), want it", c.name, len(got), redirected)
				}
				if !c.owned && (len(got) != 0 || redirected != 0) {
					t.Errorf("%s: socket got %d frames (redirected %d), want it passed", c.name, len(got), redirected)
				}
			}
			stats, _ := a.Stats()
			t.Logf("steering counters: %v", stats)
			if stats[StatPassOther] == 0 || stats[StatPassHost] == 0 || stats[StatRedirectIPIP] != 1 || stats[StatRedirectVXLAN] != 1 {
				t.Errorf("counters %v", stats)
			}

			// Turning tunnels off passes tunnel traffic.
			must(t, st.SetTunnels(false, false, 0))
			must(t, raw.Send(cases[2].frame))
			if got := receive(t, []*Socket{s}, 1, 200*time.Millisecond, nil); len(got) != 0 {
				t.Error("vxlan redirected with tunnels off")
			}
			settle(t, u, s)
			must(t, s.Close())
			must(t, a.Close())
			if r.DP.XDPAttached(t, dpIf) {
				t.Fatalf("XDP program still attached after Close:\n%s", r.DP.IP(t, "-d", "link", "show", dpIf))
			}
		})
	}
}

// TestSteeringRefusesAttached checks that an interface that already has an
// XDP program is refused and left alone.
func TestSteeringRefusesAttached(t *testing.T) {
	r := newRig(t)
	dpIf, _ := r.link(t, "0", 1500, 0)
	st := newTestSteering(t, "10.244.1.0/24")
	var a1 *Attachment
	r.do(t, func() (err error) { a1, err = st.Attach(dpIf, XDPGeneric); return err })
	defer a1.Close()
	r.do(t, func() error {
		if a2, err := st.Attach(dpIf, XDPAuto); err == nil {
			a2.Close()
			return fmt.Errorf("second attach succeeded")
		}
		return nil
	})
	if !r.DP.XDPAttached(t, dpIf) {
		t.Fatal("first program was detached by the refused attach")
	}
}

// TestSteeringPrefixUpdates checks the diffing of pod CIDRs and host
// addresses against the LPM maps.
func TestSteeringPrefixUpdates(t *testing.T) {
	nstest.RequireRoot(t)
	st := newTestSteering(t, "10.0.0.0/8", "10.1.0.0/16", "fd00::/8")
	must(t, st.SetHostAddresses([]netip.Addr{netip.MustParseAddr("10.1.2.3")}))
	must(t, st.SetPodCIDRs([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.1.2.3/32")}))
	want := map[string]uint32{"10.1.0.0/16": classPod, "10.1.2.3/32": classHost}
	got := map[string]uint32{}
	var k lpmKey4
	var v uint32
	it := st.dst4.Iterate()
	for it.Next(&k, &v) {
		got[netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)).String()] = v
	}
	must(t, it.Err())
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dst4 = %v, want %v", got, want)
	}
	var k6 lpmKey6
	if st.dst6.Iterate().Next(&k6, &v) {
		t.Fatalf("dst6 still has %v", k6)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSteeringWorkload: on an interface facing workloads, IP-in-IP and
// VXLAN to the node address go to the kernel (a pod must not have the
// dataplane decapsulate what it wrapped itself), while pod-CIDR traffic is
// redirected as on any interface.
func TestSteeringWorkload(t *testing.T) {
	r := newRig(t)
	dpIf, peerIf := r.link(t, "0", 1500, 0)
	u := newTestUMEM(t, UMEMConfig{Frames: 1024, FrameSize: 2048})
	st := newTestSteering(t, "10.244.1.0/24")
	must(t, st.SetNodeAddress(netip.MustParseAddr("192.168.77.1")))
	must(t, st.SetHostAddresses([]netip.Addr{netip.MustParseAddr("192.168.77.1")}))
	var s *Socket
	var a *Attachment
	r.do(t, func() (err error) {
		if a, err = st.AttachWorkload(dpIf, XDPAuto); err != nil {
			return err
		}
		if s, err = u.NewSocket(SocketConfig{Interface: dpIf, RxSize: 512, TxSize: 512, FillSize: 512,
			CompletionSize: 512}); err != nil {
			return err
		}
		return a.Register(s)
	})
	defer a.Close()
	if !a.Workload() {
		t.Fatal("attachment does not say it faces workloads")
	}
	raw := nstest.OpenRaw(t, r.Peer, peerIf)
	for _, c := range []struct {
		name  string
		frame []byte
		owned bool
	}{
		{"pod v4", udpFrame(t, "10.244.1.5", "10.244.1.7", 1, 2, []byte("w-pod4")), true},
		{"vxlan to node", udpFrame(t, "10.244.1.5", "192.168.77.1", 33333, 4789, []byte("w-vxlan")), false},
		{"ipip to node", ipipFrame(t, "10.244.1.5", "192.168.77.1", "10.244.2.5", "10.244.1.7"), false},
	} {
		must(t, raw.Send(c.frame))
		got := receive(t, []*Socket{s}, 1, 300*time.Millisecond, nil)
		if c.owned != (len(got) == 1) {
			t.Errorf("%s: socket got %d frames, owned %v", c.name, len(got), c.owned)
		}
	}
	stats, _ := a.Stats()
	if stats[StatRedirectPod] != 1 || stats[StatRedirectIPIP] != 0 || stats[StatRedirectVXLAN] != 0 || stats[StatPassHost] < 2 {
		t.Errorf("counters %v: want 1 pod frame redirected, both tunnel frames passed as host traffic", stats)
	}
	settle(t, u, s)
	must(t, s.Close())
}
