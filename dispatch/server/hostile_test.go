package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// TestLogOverlapConflict: a batch that repeats a stored seq with another text is refused with 409
// log_conflict naming the line, and stores nothing; an identical re-send stays a retry (200).
func TestLogOverlapConflict(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "a"), line(2, "b")}); err != nil {
		t.Fatal(err)
	}
	_, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(2, "b"), line(3, "c"), line(1, "A")})
	se, ok := api.AsStatusError(err)
	if !ok || se.Status != http.StatusConflict || se.Body.Code != api.CodeLogConflict || se.Body.Field != "lines[2].text" ||
		!strings.Contains(se.Body.Error, "seq 1") {
		t.Fatalf("overlapping batch with another text: %v; want 409 log_conflict on lines[2].text naming seq 1", err)
	}
	if !api.Permanent(err) {
		t.Errorf("a log conflict must be permanent for the client: %v", err)
	}
	got, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "a"), line(2, "b")})
	if err != nil || got != (api.AppendLogsResponse{LastSeq: 2}) {
		t.Fatalf("an identical re-send = %+v, %v; want 200 with last_seq 2 (seq 3 of the refused batch not stored)", got, err)
	}
	var texts []string
	if _, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error {
		texts = append(texts, fmt.Sprintf("%d:%s", l.Seq, l.Text))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(texts, ",") != "1:a,2:b" {
		t.Errorf("stored log = %v; want the first texts only", texts)
	}
}

// TestLogTimesAtTheBounds: the earliest and latest times a log line may carry read back unchanged; a time
// beyond them (which would wrap around in storage: 9999-12-31 read back as 1816) is refused naming the line.
func TestLogTimesAtTheBounds(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	bounds := []api.LogLine{
		{Seq: 1, Time: api.MinLogTime, Stream: api.StreamStdout, Text: "first"},
		{Seq: 2, Time: api.MaxLogTime, Stream: api.StreamStdout, Text: "last"},
	}
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, bounds); err != nil {
		t.Fatal(err)
	}
	var got []time.Time
	if _, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error { got = append(got, l.Time); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(api.MinLogTime) || !got[1].Equal(api.MaxLogTime) {
		t.Errorf("times at the bounds read back as %v", got)
	}
	for _, tm := range []time.Time{
		time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		api.MaxLogTime.Add(time.Nanosecond),
		api.MinLogTime.Add(-time.Nanosecond),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
	} {
		_, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(3, "ok"), {Seq: 4, Time: tm, Stream: api.StreamStdout, Text: "x"}})
		se, ok := api.AsStatusError(err)
		if !ok || se.Status != http.StatusUnprocessableEntity || se.Body.Field != "lines[1].time" {
			t.Errorf("time %s: %v; want 422 on lines[1].time", tm, err)
		}
	}
	if resp, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, nil); err != nil || resp.LastSeq != 2 {
		t.Errorf("after the refusals: %+v, %v; want last_seq 2", resp, err)
	}
}
