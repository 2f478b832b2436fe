package agent

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the octo-worker binary under test: $OCTO_BINARY, or built once by TestMain.
var binary string

// buildBinary returns $OCTO_BINARY, or builds the binary into dir (CGO_ENABLED=0, as released).
func buildBinary(dir string) (string, error) {
	if b := os.Getenv("OCTO_BINARY"); b != "" {
		return b, nil
	}
	out := filepath.Join(dir, "octo-worker")
	cmd := exec.Command("go", "build", "-o", out, "github.com/octo-worker/octo-worker/cmd/octo-worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building octo-worker: %v\n%s", err, b)
	}
	return out, nil
}

// spawnReqs feeds the one goroutine, locked to its own OS thread for the life of the test binary, that starts
// every child process. Children get Pdeathsig, which the kernel sends when the *thread* that forked them ends,
// and Go ends threads that the process node (running in this binary) locks for containers: forking from an
// ordinary goroutine could tie a server or agent to such a thread and kill it in the middle of a test.
var spawnReqs = func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
}()

func spawn(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawnReqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// proc is a child process of a test whose output goes to a file under the test's temp dir.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 20*time.Second)
		if t.Failed() {
			t.Logf("--- %s output (last 60 lines of %s):\n%s", name, logPath, tail(logPath, 60))
		}
	})
	return p
}

// stop signals the process and waits for it, killing it after grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHTTP polls url until it answers 200 or the deadline passes (or the process exits).
func waitHTTP(t testing.TB, p *proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.exited() {
			t.Fatalf("%s exited before %s answered: %v\n%s", p.name, url, p.err, tail(p.logPath, 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %s within %s (last: %v)\n%s", p.name, url, timeout, err, tail(p.logPath, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metric reads one value from a /metrics endpoint.
func metric(t testing.TB, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found at %s", name, url)
	return 0
}

// procStats reads a process's resident set size (bytes) and CPU time used so far.
func procStats(pid int) (rss int64, cpu time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	rssPages, _ := strconv.ParseInt(fields[21], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return rssPages * int64(os.Getpagesize()), time.Duration(utime+stime) * time.Second / hz, nil
}

// rssParts reads a process's anonymous (private heap and stacks) and file-backed (mapped binary) resident
// memory in bytes from /proc/PID/status.
func rssParts(pid int) (anon, file int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return anon, file, nil
}

// peakRSS samples a process's RSS until stop is closed and returns the highest value seen.
func peakRSS(pid int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	var once sync.Once
	go func() {
		var peak int64
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procStats(pid); err == nil && rss > peak {
				peak = rss
			}
			select {
			case <-t.C:
			case <-stop:
				once.Do(func() { out <- peak })
				return
			}
		}
	}()
	return out
}
