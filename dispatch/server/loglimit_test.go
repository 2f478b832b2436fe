package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// TestLogLimit: the limit a worker sends with its lease long-poll is kept for the operation leased. Past it,
// the log reads head, one marker, tail; a follower that was reading live never skips a line without meeting
// the marker; the result is the worker's, untouched by the cut. A limit out of bounds is refused.
func TestLogLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	token, _ := b.register("w", []string{"p"})
	w := b.client(token)
	if status, e := b.raw("POST", "/api/v1/worker/lease", token, []byte(`{"wait_seconds":0,"log_limit":1000}`)); status != 422 || e.Field != "log_limit" {
		t.Errorf("a lease with log_limit 1000 = %d %+v; want 422 naming log_limit", status, e)
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w.WithLogLimit(api.MinLogLimit))

	type seen struct {
		lines []api.LogLine
		err   error
	}
	followed := make(chan seen, 1)
	go func() {
		var s seen
		_, s.err = b.admin.Logs(b.ctx, op.ID, client.LogsOptions{Follow: true}, func(l api.LogLine) error {
			s.lines = append(s.lines, l)
			return nil
		})
		followed <- s
	}()
	const n = 30000 // about 3.5 MiB stored
	batch := make([]api.LogLine, 0, 1000)
	for seq := int64(1); seq <= n; seq++ {
		batch = append(batch, line(seq, fmt.Sprintf("line %06d %s", seq, strings.Repeat("x", 80))))
		if len(batch) == cap(batch) {
			if got, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, batch); err != nil || got.LastSeq != seq {
				t.Fatalf("AppendLogs up to %d = %+v, %v", seq, got, err)
			}
			batch = batch[:0]
		}
	}
	if _, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateFailed, ExitCode: intp(3), LastSeq: n}); err != nil {
		t.Fatalf("result with last_seq %d after the cut: %v", n, err)
	}

	var stored []api.LogLine
	end, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error { stored = append(stored, l); return nil })
	if err != nil || end == nil || end.State != api.StateFailed || end.ExitCode == nil || *end.ExitCode != 3 {
		t.Fatalf("logs ended with %+v, %v; want failed with exit code 3", end, err)
	}
	marker := -1
	for i, l := range stored {
		if l.Seq == 0 {
			if marker >= 0 || l.Stream != api.StreamSystem || !strings.Contains(l.Text, "lines (") || !strings.Contains(l.Text, "its 1 MiB limit") {
				t.Fatalf("line %d: %+v; want one marker naming the 1 MiB limit", i, l)
			}
			marker = i
		} else if want := int64(i + 1); marker < 0 && l.Seq != want {
			t.Fatalf("head line %d has seq %d, want %d", i, l.Seq, want)
		} else if marker >= 0 && i > marker+1 && l.Seq != stored[i-1].Seq+1 {
			t.Fatalf("tail seq %d follows %d", l.Seq, stored[i-1].Seq)
		}
	}
	if marker < 1000 || marker == len(stored)-1 || stored[len(stored)-1].Seq != n {
		t.Fatalf("%d lines stored, the marker at %d: want a head, the marker and a tail up to %d", len(stored), marker, n)
	}
	s := <-followed
	if s.err != nil {
		t.Fatal(s.err)
	}
	var last int64
	metMarker := false
	for _, l := range s.lines {
		if l.Seq == 0 {
			metMarker = true
			continue
		}
		if l.Seq != last+1 && !metMarker || l.Seq <= last {
			t.Fatalf("the follower saw seq %d after %d without the marker in between", l.Seq, last)
		}
		last, metMarker = l.Seq, false
	}
	if last != n {
		t.Fatalf("the follower saw up to seq %d, want %d", last, n)
	}
}
