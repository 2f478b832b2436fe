package chart

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spawnReqs feeds the one goroutine, locked to its OS thread for the life of the test binary, that starts the
// long-running child processes. They get Pdeathsig, which the kernel sends when the *thread* that forked them
// ends; the process node in this binary ends threads it locked for containers, so forking from an ordinary
// goroutine could kill a server in the middle of a test.
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

// proc is a long-running octo-worker process of a test (the dispatch server); its output goes to a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProc starts `octo-worker args...` and stops it (SIGTERM, then SIGKILL) when the test ends, printing
// the end of its output if the test failed.
func startProc(t *testing.T, name string, env []string, args ...string) *proc {
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
	errc := make(chan error, 1)
	spawnReqs <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
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
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output (last 40 lines of %s):\n%s", name, logPath, tail(logPath, 40))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// octo runs one octo-worker command to completion (at most five minutes) and returns its standard output;
// the test fails when it exits non-zero.
func octo(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("octo-worker %s: %v\nstdout:\n%s\nstderr:\n%s", redactArgs(args), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// redactArgs hides the value after --registration-token in a command line printed by a failing test.
func redactArgs(args []string) string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == "--registration-token" && i+1 < len(out) {
			out[i+1] = "<redacted>"
		}
	}
	return strings.Join(out, " ")
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

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every half second until it returns true, failing the test after within with what it
// waited for and the last state cond described.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	pollFor(t, within, 500*time.Millisecond, what, cond)
}

// pollFor is waitFor polling every period: for states that may last only a few seconds.
func pollFor(t *testing.T, within, period time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last state: %s", within, what, state)
		}
		time.Sleep(period)
	}
}
