package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
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

// TestSlowBodiesAreCutOff: a client that sends its body slower than the route's read timeout gets 408 and
// its connection closed, with or without a token, instead of holding the connection open for ever.
func TestSlowBodiesAreCutOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.BodyReadTimeout, cfg.LargeBodyReadTimeout = 300*time.Millisecond, 300*time.Millisecond
	b := setup(t, cfg)
	addr := strings.TrimPrefix(b.url, "http://")
	for _, tc := range []struct{ name, path, token string }{
		{"no token", "/api/v1/pools", ""},
		{"admin", "/api/v1/operations", adminToken},
		{"log batch", "/api/v1/worker/operations/op-x/logs", "whatever"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The test's own bound: far beyond the server's, so a slow machine does not fail it.
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			auth := ""
			if tc.token != "" {
				auth = "Authorization: Bearer " + tc.token + "\r\n"
			}
			if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", tc.path, auth); err != nil {
				t.Fatal(err)
			}
			// Trickle a byte whenever the server lets us, until it answers or closes the connection.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := conn.Write([]byte(" ")); err != nil {
							return
						}
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v; want 408 before the test's deadline", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout && !(tc.token != adminToken && resp.StatusCode == http.StatusUnauthorized) {
				t.Fatalf("answer %d; want 408 (or 401 for a bad token, with the body still cut)", resp.StatusCode)
			}
			// The connection is closed (EOF, or a reset for the bytes still arriving): the server does not wait
			// for the rest of the body.
			var ne net.Error
			if _, err := io.Copy(io.Discard, conn); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection stayed open after the answer: %v", err)
			}
		})
	}
}

// TestLongPollsPerWorkerAreCapped: a worker holds at most api.MaxPollsPerWorker long-polls open; one more is
// refused at once with 429 too_many_polls, and a poll is accepted again once one ends.
func TestLongPollsPerWorkerAreCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	token, _ := b.register("w", []string{"p"})
	ctx, cancel := context.WithCancel(b.ctx)
	var wg sync.WaitGroup
	for range api.MaxPollsPerWorker {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", b.url+"/api/v1/worker/lease", strings.NewReader(`{"wait_seconds":30}`))
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	b.waitAsleep("the worker's polls to wait", func(n int) bool { return n == api.MaxPollsPerWorker })
	status, e := b.raw("POST", "/api/v1/worker/lease", token, []byte(`{"wait_seconds":30}`))
	if status != http.StatusTooManyRequests || e.Code != api.CodeTooManyPolls {
		t.Errorf("poll %d = %d %+v; want 429 too_many_polls at once", api.MaxPollsPerWorker+1, status, e)
	}
	// Another worker is not affected.
	other, _ := b.worker("other", []string{"p"})
	if l, err := other.Lease(b.ctx, 0); err != nil || l != nil {
		t.Errorf("another worker's poll = %+v, %v", l, err)
	}
	cancel()
	wg.Wait()
	b.waitAsleep("the polls to end", func(n int) bool { return n == 0 })
	if status, e := b.raw("POST", "/api/v1/worker/lease", token, []byte(`{"wait_seconds":0}`)); status != http.StatusNoContent {
		t.Errorf("a poll after the others ended = %d %+v; want 204", status, e)
	}
}
