package header

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the seed corpus in testdata/fuzz from the table tests")

// TestWriteFuzzCorpus writes the seed corpus of the fuzz targets:
//
//	go test ./datapath/header -run TestWriteFuzzCorpus -write-fuzz-corpus
//
// It replaces the seeds it wrote before (files named seed-*) and keeps any
// other file, such as a crasher the fuzzer saved.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("pass -write-fuzz-corpus to rewrite testdata/fuzz")
	}
	var packets [][]byte
	for _, c := range v6Cases() {
		packets = append(packets, c.build(t))
	}
	writeSeeds(t, "FuzzIPv6Transport", packets, func(b []byte) string { return corpusBytes(b) })

	views := append([][]byte(nil), packets...)
	for _, c := range ipv4Cases(t) {
		views = append(views, c.build(t))
	}
	eth := []gopacket.SerializableLayer{
		&layers.Ethernet{DstMAC: hwAddr(MAC{2, 0, 0, 0, 0, 1}), SrcMAC: hwAddr(MAC{2, 0, 0, 0, 0, 2}), EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: hwAddr(MAC{2, 0, 0, 0, 0, 2}), SourceProtAddress: ip4(10, 0, 0, 2),
			DstHwAddress: make([]byte, 6), DstProtAddress: ip4(10, 0, 0, 1)},
	}
	views = append(views,
		serialize(t, eth...),
		serialize(t, eth[2]),
		serialize(t, &layers.VXLAN{ValidIDFlag: true, VNI: 0xabcdef}, gopacket.Payload("inner")),
		serialize(t, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}),
		[]byte{},
		make([]byte, 20),
		[]byte{0x45, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
	writeSeeds(t, "FuzzViews", views, func(b []byte) string { return corpusBytes(b) })

	type sumInput struct {
		b       []byte
		initial uint16
		split   uint
	}
	sums := []sumInput{
		{nil, 0, 0},
		{[]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0, 4},
		{[]byte{0xff}, 0xffff, 1},
		{bytes.Repeat([]byte{0xff}, 33), 0xffff, 16},
		{make([]byte, 1500), 0xffff, 750},
		{packets[0], 0x1234, 40},
	}
	writeSeeds(t, "FuzzChecksum", sums, func(s sumInput) string {
		return fmt.Sprintf("%s\nuint16(%d)\nuint(%d)", corpusBytes(s.b), s.initial, s.split)
	})
}

func corpusBytes(b []byte) string { return fmt.Sprintf("[]byte(%q)", b) }

func writeSeeds[T any](t *testing.T, target string, seeds []T, format func(T) string) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := filepath.Glob(filepath.Join(dir, "seed-*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range seeds {
		text := "go test fuzz v1\n" + format(s) + "\n"
		name := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: %d seeds", target, len(seeds))
}
