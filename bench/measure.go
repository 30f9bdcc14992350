package bench

import (
	"flag"
	"fmt"
	"sync"
	"testing"
)

// Measurement is what one Go benchmark function measured.
type Measurement struct {
	NsPerOp     float64
	AllocsPerOp float64
	BytesPerOp  float64
	N           int
}

var initTesting sync.Once

// setBenchTime sets the duration (or "Nx" count) testing.Benchmark aims for.
// testing.Benchmark reads the -test.benchtime flag, which exists once
// testing.Init has registered it.
func setBenchTime(v string) error {
	initTesting.Do(testing.Init)
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return fmt.Errorf("testing flags not registered")
	}
	return f.Value.Set(v)
}

// Measure runs f as a Go benchmark (testing.Benchmark: b.N grows until the run
// lasts BenchTime, one second by default, 50ms in quick mode) and returns the
// per-operation figures. opsPerIter is how many operations one b.N iteration
// performs (a batch of 256 lookups is 256 operations).
func Measure(opt Options, opsPerIter int, f func(b *testing.B)) Measurement {
	bt := opt.BenchTime
	if bt == "" {
		bt = "1s"
		if opt.Quick {
			bt = "50ms"
		}
	}
	if err := setBenchTime(bt); err != nil {
		panic("bench: " + err.Error())
	}
	r := testing.Benchmark(f)
	if opsPerIter < 1 {
		opsPerIter = 1
	}
	m := Measurement{N: r.N}
	if r.N > 0 {
		ops := float64(r.N) * float64(opsPerIter)
		m.NsPerOp = float64(r.T.Nanoseconds()) / ops
		m.AllocsPerOp = float64(r.MemAllocs) / ops
		m.BytesPerOp = float64(r.MemBytes) / ops
	}
	return m
}
