package agent

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// TestLogLimitHeadAndTail: an operation prints 5 MB of numbered lines under scriptPods.logLimit 1Mi. The
// stored log is its head, one marker counting the lines dropped, and its tail up to the last line; the exit
// code is the script's; what is stored stays within the limit plus one piece (limit/16); the server's peak
// memory (VmHWM) is reported.
func TestLogLimitHeadAndTail(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: "scriptPods:\n  logLimit: 1Mi\n"})
	before := vmHWM(t, e.server.Pid())
	const n = 100000 // 52 bytes a line
	id := e.submit(api.OperationSpec{Script: fmt.Sprintf("seq -f 'line %%06g: 0123456789012345678901234567890123456789' 1 %d; exit 7", n)})
	op := e.waitFor(id, 10*time.Minute)
	if op.State != api.StateFailed || op.ExitCode == nil || *op.ExitCode != 7 {
		t.Fatalf("state %s exit %v (%s); want failed with exit code 7", op.State, deref(op.ExitCode), op.Message)
	}
	after := vmHWM(t, e.server.Pid())
	lines := e.logs(id)
	var head, tail []api.LogLine
	var marker *api.LogLine
	var stored int64
	for i, l := range lines {
		switch {
		case l.Seq == 0 && strings.HasPrefix(l.Text, "… "):
			if marker != nil {
				t.Fatalf("a second marker: %q", l.Text)
			}
			marker = &lines[i]
			continue
		case l.Seq == 0:
		case marker == nil:
			head = append(head, l)
		default:
			tail = append(tail, l)
		}
		stored += store.LogLineBytes(l)
	}
	if marker == nil || len(head) == 0 || len(tail) == 0 {
		t.Fatalf("%d head lines, marker %v, %d tail lines; want all three\n%s", len(head), marker, len(tail), e.dump(id))
	}
	checkLines(t, head, int64(len(head)))
	for i, l := range tail {
		if want := tail[0].Seq + int64(i); l.Seq != want || l.Text != fmt.Sprintf("line %06d: 0123456789012345678901234567890123456789", want) {
			t.Fatalf("tail line %d: %+v, want seq %d", i, l, want)
		}
	}
	if last := tail[len(tail)-1].Seq; last != n {
		t.Fatalf("the tail ends at seq %d, want %d", last, n)
	}
	dropped := tail[0].Seq - head[len(head)-1].Seq - 1
	m := regexp.MustCompile(`^… ([0-9,]+) lines \(([^)]+)\) dropped here: this log passed its 1 MiB limit`).FindStringSubmatch(marker.Text)
	if m == nil {
		t.Fatalf("marker %q does not say what was dropped", marker.Text)
	}
	// The worker's notes (pod events) shipped in the batches dropped go with them, and count.
	if got, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64); got < dropped || got > dropped+5 {
		t.Errorf("marker counts %d lines, want the %d of seqs %d..%d and at most a few notes", got, dropped, head[len(head)-1].Seq+1, tail[0].Seq-1)
	}
	const limit = 1 << 20
	if stored > limit+limit/16 {
		t.Errorf("%d bytes stored, over the limit plus one piece (%d)", stored, limit+limit/16)
	}
	t.Logf("stored %d of %d lines: head 1..%d, %d bytes with the tail; marker %q; server VmHWM %d KiB before the operation, %d KiB after",
		len(head)+len(tail), n, len(head), stored, marker.Text, before, after)
	if after-before > 64<<10 {
		t.Errorf("the server's peak memory grew by %d KiB during the operation; want under 64 MiB", after-before)
	}
}

// vmHWM is a process's peak resident memory in KiB.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v
}
