package encap_test

import (
	"strings"
	"testing"

	"github.com/tabbynet/tabby/encap"
)

func TestNewTunnelDefaults(t *testing.T) {
	tun, err := encap.NewTunnel(encap.TunnelConfig{Src: nodeA, Dst: nodeB})
	if err != nil {
		t.Fatal(err)
	}
	c := tun.Config()
	if c.TTL != 64 || c.VNI != 4096 || c.Port != 4789 || c.UnderlayMTU != 1500 {
		t.Errorf("defaults: TTL %d VNI %d port %d MTU %d", c.TTL, c.VNI, c.Port, c.UnderlayMTU)
	}
	if tun.MTU(encap.ModeIPIP) != 1480 || tun.MTU(encap.ModeVXLAN) != 1450 {
		t.Errorf("MTU ipip %d vxlan %d, want 1480 1450", tun.MTU(encap.ModeIPIP), tun.MTU(encap.ModeVXLAN))
	}
	if encap.IPIPOverhead != 20 || encap.VXLANOverhead != 50 {
		t.Errorf("overheads %d %d", encap.IPIPOverhead, encap.VXLANOverhead)
	}
	if encap.TunnelMTU(9000, encap.ModeVXLAN) != 8950 || encap.TunnelMTU(9000, encap.ModeIPIP) != 8980 || encap.TunnelMTU(1500, 0) != 0 {
		t.Errorf("TunnelMTU")
	}
	if encap.ModeIPIP.String() != "ipip" || encap.ModeVXLAN.String() != "vxlan" || encap.Mode(9).String() != "mode-unknown" {
		t.Errorf("Mode.String")
	}
}

func TestNewTunnelErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  encap.TunnelConfig
		want string
	}{
		{"vni", encap.TunnelConfig{VNI: 1 << 24}, "VNI"},
		{"mtu small", encap.TunnelConfig{UnderlayMTU: 117}, "MTU"},
		{"mtu large", encap.TunnelConfig{UnderlayMTU: 65536}, "MTU"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := encap.NewTunnel(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one about %s", err, c.want)
			}
		})
	}
	if _, err := encap.NewTunnel(encap.TunnelConfig{UnderlayMTU: 118, VNI: 1<<24 - 1}); err != nil {
		t.Fatalf("limits: %v", err)
	}
}

func TestVerdictNames(t *testing.T) {
	seen := map[string]encap.Verdict{}
	for v := range encap.Verdict(encap.NumVerdicts) {
		s := v.String()
		if s == "" || s == "verdict-unknown" || strings.ContainsAny(s, " _") {
			t.Errorf("verdict %d: name %q", v, s)
		}
		if w, dup := seen[s]; dup {
			t.Errorf("verdicts %d and %d share the name %q", w, v, s)
		}
		seen[s] = v
		if v.IsOK() != (v == encap.OK || v == encap.OKUnusualECN) {
			t.Errorf("%v.IsOK() = %v", v, v.IsOK())
		}
	}
	if encap.Verdict(encap.NumVerdicts).String() != "verdict-unknown" {
		t.Errorf("out-of-range verdict name")
	}
}

// TestTunnelShared encapsulates on one Tunnel from several goroutines (run
// with -race): the tunnel is shared by all workers.
func TestTunnelShared(t *testing.T) {
	tun := newTunnel(t, nil)
	done := make(chan map[uint16]bool)
	for range 4 {
		go func() {
			buf := make([]byte, 512)
			testFrame(buf, 256, 100, 0)
			ids := map[uint16]bool{}
			for range 1000 {
				o, _ := encap.VXLANEncap(buf, 256, 100, tun, 1)
				ids[uint16(buf[o+18])<<8|uint16(buf[o+19])] = true
			}
			done <- ids
		}()
	}
	all := map[uint16]bool{}
	for range 4 {
		for id := range <-done {
			if all[id] {
				t.Fatalf("ID %d used by two goroutines", id)
			}
			all[id] = true
		}
	}
	if len(all) != 4000 {
		t.Fatalf("%d distinct IDs, want 4000", len(all))
	}
}
