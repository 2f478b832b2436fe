package main

import (
	"bufio"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// The placeholder runs until SIGTERM and then exits 0 at once: a preempting script pod waits for nothing.
func TestPauseEndsOnSIGTERM(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPauseChild$")
	cmd.Env = append(os.Environ(), "OCTO_TEST_PAUSE=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != pauseReady+"\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("pause printed %q (%v), want %q", line, err, pauseReady)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pause after SIGTERM: %v, want exit 0", err)
	}
}

// TestPauseChild is the process TestPauseEndsOnSIGTERM starts: `octo-worker pause`.
func TestPauseChild(t *testing.T) {
	if os.Getenv("OCTO_TEST_PAUSE") != "1" {
		t.Skip("run by TestPauseEndsOnSIGTERM")
	}
	if err := newApp("test").Run([]string{"octo-worker", "pause"}); err != nil {
		t.Fatal(err)
	}
	os.Exit(0) // before the test framework prints anything more
}
