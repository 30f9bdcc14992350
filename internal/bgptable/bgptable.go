// Package bgptable exposes a real Internet BGP table (about 900k IPv4 and 160k
// IPv6 prefixes, see README.md for its origin and licence) to tests and
// benchmarks. The data is embedded, so callers work on any machine.
//
// The returned slices are shared and must not be modified.
package bgptable

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"net/netip"
	"sync"
)

//go:embed bgp-table.txt.gz
var compressed []byte

var (
	once     sync.Once
	v4, v6   []netip.Prefix
	parseErr error
)

// Prefixes returns the IPv4 and IPv6 prefixes of the table, in file order,
// masked to their length. The first call decompresses and parses the table.
func Prefixes() (ipv4, ipv6 []netip.Prefix, err error) {
	once.Do(func() { v4, v6, parseErr = parse(compressed) })
	return v4, v6, parseErr
}

// MustPrefixes is Prefixes for tests and benchmarks: it panics on error.
func MustPrefixes() (ipv4, ipv6 []netip.Prefix) {
	a, b, err := Prefixes()
	if err != nil {
		panic(err)
	}
	return a, b
}

func parse(gz []byte) (ipv4, ipv6 []netip.Prefix, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, nil, fmt.Errorf("open bgp table: %w", err)
	}
	defer zr.Close()
	ipv4 = make([]netip.Prefix, 0, 910_000)
	ipv6 = make([]netip.Prefix, 0, 170_000)
	sc := bufio.NewScanner(zr)
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		p, err := netip.ParsePrefix(string(text))
		if err != nil {
			return nil, nil, fmt.Errorf("bgp table line %d: %w", line, err)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			ipv4 = append(ipv4, p)
		} else {
			ipv6 = append(ipv6, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read bgp table: %w", err)
	}
	return ipv4, ipv6, nil
}
