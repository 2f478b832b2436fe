package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

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
