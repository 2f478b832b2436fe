// Package proc runs the long-running child processes of end-to-end tests (the dispatch server, the worker
// agent): each started from one OS thread that lives as long as the test binary, its output in a file under
// the test's temp dir, stopped when the test ends, and the end of its output shown when the test failed.
package proc

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spawnReqs feeds the one goroutine, locked to its own OS thread for the life of the test binary, that starts
// every child process. Children get Pdeathsig, which the kernel sends when the *thread* that forked them ends,
// and Go ends threads that the process node (running in the test binary) locks for containers: forking from
// an ordinary goroutine could tie a server or agent to such a thread and kill it in the middle of a test.
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

// OnSpawnThread runs f on the thread that starts every child process, and returns once f has. It is for
// helpers of other packages that start a long-running child with Pdeathsig themselves (pgtest.Start): from an
// ordinary goroutine, that child could die as soon as the process node ends the thread it was forked from.
func OnSpawnThread(f func()) {
	done := make(chan struct{})
	spawnReqs <- func() { defer close(done); f() }
	<-done
}

// Proc is a child process of a test.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string // its standard output and error
	done    chan struct{}
	err     error
}

// Start runs exe with args and env (added to this process's environment). When the test ends it stops the
// process (SIGTERM, then SIGKILL after 20 s) and, if the test failed, logs the last 60 lines of its output.
func Start(t testing.TB, exe, name string, env []string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	spawnReqs <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM, 20*time.Second)
		if t.Failed() {
			t.Logf("--- %s output (last 60 lines of %s):\n%s", name, logPath, p.Tail(60))
		}
	})
	return p
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stop signals the process and waits for it, killing it after grace. It returns how the process ended.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) error {
	if !p.Exited() {
		_ = p.Cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	}
	return p.err
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Tail returns the last n lines of the process's output.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitHTTP polls url until it answers 200, failing the test when the process exits first or timeout passes.
func (p *Proc) WaitHTTP(t testing.TB, url string, timeout time.Duration) {
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
		if p.Exited() {
			t.Fatalf("%s exited before %s answered: %v\n%s", p.Name, url, p.err, p.Tail(40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %s within %s (last: %v)\n%s", p.Name, url, timeout, err, p.Tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePort returns a TCP port on the loopback interface that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
