package podrunner

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// meter measures what the script consumes. It reads the container's cgroup when the runner has one of its own
// (nothing else runs in it: in a pod, the runner is the container's first process), else the rusage of the
// runner's children, whose memory figure is the largest single process, not their sum.
type meter struct {
	cgroup   string // the runner's own cgroup directory; empty: use rusage
	cpuStart int64  // the cgroup's cpu.stat usage_usec when the meter started
}

// startMeter is called before the script starts.
func startMeter(fs cgroupFS) *meter {
	m := &meter{}
	dir, ok := fs.own(os.Getpid())
	if !ok {
		return m
	}
	if _, err := os.Stat(filepath.Join(dir, "memory.peak")); err != nil {
		return m // a kernel before 5.19 has no memory.peak
	}
	usec, ok := cgroupCPU(dir)
	if !ok {
		return m
	}
	m.cgroup, m.cpuStart = dir, usec
	return m
}

// own returns the runner's cgroup v2 directory when pid (the runner) is the only process in it.
func (fs cgroupFS) own(pid int) (string, bool) {
	b, err := os.ReadFile(fs.SelfFile)
	if err != nil {
		return "", false
	}
	var rel string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", false // cgroup v1 only
	}
	dir := filepath.Join(fs.Root, filepath.Clean("/"+rel))
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return "", false
	}
	for _, f := range strings.Fields(string(procs)) {
		if f != strconv.Itoa(pid) {
			return "", false // shared with other processes (a process node, a host): not the script's to measure
		}
	}
	return dir, true
}

// cgroupCPU reads usage_usec from a cgroup's cpu.stat.
func cgroupCPU(dir string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// stop is called after the script and its output ended; nil when nothing could be measured.
func (m *meter) stop() *api.Usage {
	if m.cgroup != "" {
		peak, err1 := os.ReadFile(filepath.Join(m.cgroup, "memory.peak"))
		n, err2 := strconv.ParseInt(strings.TrimSpace(string(peak)), 10, 64)
		usec, ok := cgroupCPU(m.cgroup)
		if err1 == nil && err2 == nil && ok {
			return &api.Usage{PeakMemoryBytes: n, CPUSeconds: float64(usec-m.cpuStart) / 1e6, Source: api.UsageCgroup}
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return nil
	}
	cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	return &api.Usage{PeakMemoryBytes: ru.Maxrss * 1024, CPUSeconds: cpu, Source: api.UsageRusage} // Maxrss is in KiB
}
