package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/stat (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// cpuTimes is one /proc/stat CPU line in ticks.
type cpuTimes struct {
	busy, total uint64
}

// cpuStat is a /proc/stat sample: the machine and each CPU.
type cpuStat struct {
	all  cpuTimes
	cpus []cpuTimes
}

// readCPUStat samples /proc/stat. Busy is user + nice + system + irq +
// softirq + steal (guest time is already in user); idle and iowait are not.
func readCPUStat() (cpuStat, error) {
	b, err := readFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	return parseCPUStat(b)
}

func parseCPUStat(b []byte) (cpuStat, error) {
	var st cpuStat
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]uint64
		for i := range v {
			x, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return st, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			v[i] = x
		}
		// user nice system idle iowait irq softirq steal
		t := cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7]}
		t.total = t.busy + v[3] + v[4]
		if f[0] == "cpu" {
			st.all, found = t, true
		} else {
			st.cpus = append(st.cpus, t)
		}
	}
	if !found {
		return st, fmt.Errorf("/proc/stat: no cpu line")
	}
	return st, nil
}

// cpuDelta is the CPU use between two samples.
type cpuDelta struct {
	// busySec is busy CPU-seconds over all CPUs.
	busySec float64
	// perCPU is each CPU's busy fraction.
	perCPU []float64
	// cores is busySec / elapsed: how many CPUs were busy on average.
	cores float64
}

func (a cpuStat) to(b cpuStat) cpuDelta {
	d := cpuDelta{busySec: float64(b.all.busy-a.all.busy) / clockTicks}
	if tot := b.all.total - a.all.total; tot > 0 && len(b.cpus) > 0 {
		d.cores = float64(b.all.busy-a.all.busy) / float64(tot) * float64(len(b.cpus))
	}
	for i := range min(len(a.cpus), len(b.cpus)) {
		if tot := b.cpus[i].total - a.cpus[i].total; tot > 0 {
			d.perCPU = append(d.perCPU, float64(b.cpus[i].busy-a.cpus[i].busy)/float64(tot))
		} else {
			d.perCPU = append(d.perCPU, 0)
		}
	}
	return d
}

// String formats the per-CPU busy fractions, e.g. "cpu0 100% cpu1 87%".
func (d cpuDelta) String() string {
	var parts []string
	for i, f := range d.perCPU {
		parts = append(parts, fmt.Sprintf("cpu%d %.0f%%", i, 100*f))
	}
	return strings.Join(parts, " ")
}
