package cluster

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// spawner starts processes from one dedicated, locked OS thread that lives until close.
//
// Children get Pdeathsig SIGKILL so that none outlives this program. The kernel sends it when the *thread*
// that forked the child ends, and Go ends threads that a goroutine locked and never unlocked (the process
// node does that for every container): forking from an ordinary goroutine could tie a control-plane process
// to such a thread and kill it early. A thread of our own avoids that.
type spawner struct {
	reqs chan func()
	done chan struct{}
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(s.done)
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}

// component is one control-plane process.
type component struct {
	name    string
	bin     string
	args    []string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error // how it exited; set before done is closed
}

func (c *Cluster) startComponent(name string, bin string, args []string) (*component, error) {
	comp := &component{name: name, bin: bin, args: args, done: make(chan struct{})}
	var out io.Writer
	if c.opts.Logs != nil {
		out = c.opts.Logs
	} else {
		comp.logPath = c.logPath(name)
		// Appended to: a restarted component (Cluster.RestartAPIServer) goes on in the same file.
		f, err := os.OpenFile(comp.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("creating %s log: %w", name, err)
		}
		comp.logFile = f
		out = f
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	comp.cmd = cmd
	if err := c.spawner.start(cmd); err != nil {
		if comp.logFile != nil {
			comp.logFile.Close()
		}
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	go func() {
		comp.err = cmd.Wait()
		if comp.logFile != nil {
			comp.logFile.Close()
		}
		close(comp.done)
	}()
	c.components = append(c.components, comp)
	return comp, nil
}

// exited returns an error when the component is no longer running, with the end of its log.
func (comp *component) exited() error {
	select {
	case <-comp.done:
		return fmt.Errorf("%s exited (%v)%s", comp.name, comp.err, tailFile(comp.logPath, 15))
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to grace, then kills.
func (comp *component) stop(grace time.Duration) error {
	select {
	case <-comp.done:
		return nil
	default:
	}
	_ = comp.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-comp.done:
		return nil
	case <-t.C:
		_ = comp.cmd.Process.Kill()
		<-comp.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", comp.name, grace)
	}
}

// tailFile returns the last n lines of a log file, indented, for error messages.
func tailFile(path string, n int) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var s strings.Builder
	fmt.Fprintf(&s, "; last lines of %s:", path)
	for _, l := range lines {
		s.WriteString("\n    ")
		s.Write(l)
	}
	return s.String()
}
