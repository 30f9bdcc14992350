package engine

import (
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datapath"
)

// TestBurstRingSize: the default, an explicit size, and a refused one that
// names the setting.
func TestBurstRingSize(t *testing.T) {
	tables, err := datapath.NewTables(datapath.NodeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	base := Config{Tables: tables, Interfaces: []Interface{{Name: "eth0"}}}
	cfg, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BurstRingSize != defaultBurstRingSize {
		t.Fatalf("default burst ring %d, want %d", cfg.BurstRingSize, defaultBurstRingSize)
	}
	base.BurstRingSize = 8192
	if cfg, err = base.withDefaults(); err != nil || cfg.BurstRingSize != 8192 {
		t.Fatalf("8192: %d, %v", cfg.BurstRingSize, err)
	}
	base.BurstRingSize = 100
	if _, err = base.withDefaults(); err == nil || !strings.Contains(err.Error(), "burst ring size 100") {
		t.Fatalf("100: %v, want an error naming the burst ring size", err)
	}
}
