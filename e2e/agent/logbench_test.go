package agent

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the probe reads the server's database, read-only

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// What BenchmarkLogThroughput measures besides rates: the CPU each process of the pipeline spends per line in
// each phase, so the stages' costs can be compared on a shared machine (wall-clock rates there depend on
// what else runs; CPU time much less), and optional pprof CPU profiles.

// cpuMeter reads the CPU time (user + system) of the processes of the log pipeline.
type cpuMeter struct {
	pids map[string]int // kube-apiserver, server, agent; "kubelet" is this process (the node, the readers)
}

// cpuSample is the CPU time of each process at one moment; "pods" is what the reaped children of this
// process used (the script pods' runners).
type cpuSample map[string]time.Duration

func newCPUMeter(b *testing.B, e *env) *cpuMeter {
	api := pidOf("kube-apiserver", kube.Dir)
	if api == 0 {
		b.Fatalf("no kube-apiserver process for the cluster in %s", kube.Dir)
	}
	return &cpuMeter{pids: map[string]int{"apiserver": api, "server": e.server.Pid(), "agent": e.agent.Pid()}}
}

func (m *cpuMeter) sample(b *testing.B) cpuSample {
	s := cpuSample{}
	for name, pid := range m.pids {
		t, _, err := cpuTimes(pid)
		if err != nil {
			b.Fatalf("CPU time of %s: %v", name, err)
		}
		s[name] = t
	}
	self, children, err := cpuTimes(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	s["kubelet"], s["pods"] = self, children
	return s
}

// perLine returns the CPU nanoseconds per line each process spent from s0 to s1 for lines lines, and their
// sum.
func perLine(s0, s1 cpuSample, lines int) (map[string]float64, float64) {
	out, total := map[string]float64{}, 0.0
	for name, t := range s1 {
		ns := float64((t - s0[name]).Nanoseconds()) / float64(lines)
		out[name] = ns
		total += ns
	}
	return out, total
}

// formatCosts writes one phase's costs as "name N ns/line" in a fixed order.
func formatCosts(costs map[string]float64, total float64) string {
	names := make([]string, 0, len(costs))
	for n := range costs {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "%s %.0f, ", n, costs[n])
	}
	fmt.Fprintf(&sb, "total %.0f CPU ns/line", total)
	return sb.String()
}

// cpuTimes returns a process's own CPU time and that of its reaped children (from /proc/PID/stat).
func cpuTimes(pid int) (self, children time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var v [4]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("field %d of /proc/%d/stat: %w", 14+i, pid, err)
		}
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(v[0]+v[1]) * time.Second / hz, time.Duration(v[2]+v[3]) * time.Second / hz, nil
}

// pidOf finds the process named comm whose command line holds arg.
func pidOf(comm, arg string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		c, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		cmd, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if strings.TrimSpace(string(c)) == comm && strings.Contains(string(cmd), arg) {
			return pid
		}
	}
	return 0
}

// benchProfile is OCTO_BENCH_PROFILE: a directory where the benchmark writes pprof CPU profiles: this
// process (the process node, the readers) per phase, and the dispatch server and the agents for their whole
// run (through the binary's OCTO_CPU_PROFILE). Read them with `go tool pprof -top BINARY FILE`.
func benchProfile(b *testing.B) string {
	dir := os.Getenv("OCTO_BENCH_PROFILE")
	if dir == "" {
		return ""
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Setenv("OCTO_CPU_PROFILE", dir) // the server and agents started from now on inherit it
	return dir
}

// profilePhase profiles this process into dir/test-<phase>.pprof until the returned function is called.
func profilePhase(b *testing.B, dir, phase string) func() {
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "test-"+phase+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// stored is what storedRate saw: lines per second, over the last lines lines.
type stored struct {
	rate  float64
	lines int64
}

// storedRate polls the server's database (read-only, every 5 ms) for the operation's contiguous last_seq and
// sends the lines per second it stored, from the first poll that saw lines (when it calls onFirst) to the one
// that saw all n. Polling the store costs the pipeline almost nothing, unlike following the log (a follower
// decodes every line on the two cores the pipeline runs on); exactly-once delivery is checked afterwards
// (checkStored).
func (e *env) storedRate(id string, n int64, onFirst func()) <-chan stored {
	out := make(chan stored, 1)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "octo-worker.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		e.t.Fatal(err)
	}
	go func() {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var first time.Time
		var from int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var last int64
			if err := db.QueryRowContext(ctx, `SELECT last_seq FROM operations WHERE id = ?`, id).Scan(&last); err != nil {
				e.t.Errorf("polling last_seq of %s: %v", id, err)
				out <- stored{}
				return
			}
			now := time.Now()
			if last > 0 && first.IsZero() {
				first, from = now, last
				onFirst()
			}
			if last >= n {
				if last == from {
					e.t.Errorf("all %d lines of %s were stored before the first poll", n, id)
					out <- stored{}
					return
				}
				out <- stored{rate: float64(last-from) / now.Sub(first).Seconds(), lines: last - from}
				return
			}
			<-tick.C
		}
	}()
	return out
}

// checkStored fails unless the operation's log holds lines 1..n once each, in order, and returns the lines
// per second the runner produced them at (by its own timestamps on the first and last line).
func (e *env) checkStored(id string, n int64) float64 {
	e.t.Helper()
	var seq int64
	var first, last time.Time
	for _, l := range e.logs(id) {
		if l.Seq == 0 {
			continue
		}
		if l.Seq != seq+1 {
			e.t.Fatalf("operation %s: line %d stored after line %d", id, l.Seq, seq)
		}
		seq = l.Seq
		if seq == 1 {
			first = l.Time
		}
		last = l.Time
	}
	if seq != n {
		e.t.Fatalf("operation %s: %d lines stored, want %d", id, seq, n)
	}
	waitUntil(e.t, time.Minute, "the operation finished", func() bool { return e.get(id).State.Terminal() })
	if op := e.get(id); op.State != api.StateSucceeded {
		e.t.Fatalf("operation %s: %s: %s", id, op.State, op.Message)
	}
	return float64(n-1) / last.Sub(first).Seconds()
}
