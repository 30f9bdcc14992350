package prefetch

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestHintsAreHarmless: a hint changes no memory and never faults, also for
// an address nothing is mapped at.
func TestHintsAreHarmless(t *testing.T) {
	buf := make([]byte, 4*Line)
	for i := range buf {
		buf[i] = byte(i)
	}
	for i := 0; i < len(buf); i += 7 {
		Read(unsafe.Pointer(&buf[i]))
		Write(unsafe.Pointer(&buf[i]))
	}
	for i := range buf {
		if buf[i] != byte(i) {
			t.Fatalf("byte %d changed to %d", i, buf[i])
		}
	}
	addrs := []uintptr{uintptr(unsafe.Pointer(&buf[Line])), uintptr(unsafe.Pointer(&buf[3*Line]))}
	Lines(addrs)
	Lines(nil)
	for i := range buf {
		if buf[i] != byte(i) {
			t.Fatalf("byte %d changed to %d by Lines", i, buf[i])
		}
	}
	// A hint for memory that may not be touched is dropped, not a fault.
	none, err := unix.Mmap(-1, 0, 4096, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(none)
	Read(unsafe.Pointer(&none[0]))
	Write(unsafe.Pointer(&none[64]))
	Lines([]uintptr{uintptr(unsafe.Pointer(&none[128]))})
}

func BenchmarkRead(b *testing.B) {
	buf := make([]byte, Line)
	for b.Loop() {
		Read(unsafe.Pointer(&buf[0]))
	}
}
