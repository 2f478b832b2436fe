package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// leasedRow inserts an operation of pool p (see servers) leased to worker "w", with secrets when given and a
// log limit, straight into the table, so these tests need nothing but the log methods.
func leasedRow(t *testing.T, s *Store, id, secrets string, limit int64) store.LeaseRef {
	t.Helper()
	now := time.Now()
	var sec *string
	if secrets != "" {
		sec = &secrets
	}
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO operations (id, pool, body, secrets, ready, state, worker_id, lease_id,
		lease_expires_at, created_at, log_limit) VALUES ($1, 'p', '{}', $2, TRUE, 'leased', 'w', 'lease-' || $1, $3, $4, $5)`,
		id, sec, nanos(now.Add(time.Hour)), nanos(now), limit); err != nil {
		t.Fatal(err)
	}
	return store.LeaseRef{OperationID: id, LeaseID: "lease-" + id, WorkerID: "w", Now: now}
}

// appendAtOnce starts appenders goroutines, appender g on servers[g%len(servers)], each appending
// batch(g, b) for b in 0..batches-1 to ref's log; wait returns once all are done, with the first error.
func appendAtOnce(servers []*Store, ref store.LeaseRef, appenders, batches int, batch func(g, b int) []api.LogLine) (wait func() error) {
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if _, err := servers[g%len(servers)].AppendLogs(context.Background(), ref, batch(g, b)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	return func() error {
		wg.Wait()
		close(errs)
		return <-errs
	}
}

// TestConcurrentAppendsFollower: appenders on two servers write one operation's log at once (numbered lines
// and worker notes) while a follower reads it with the cursor the server's follow uses; the follower must see
// every line. With a global position (a sequence) given out without the operation's row lock, a follower
// misses lines committed behind its cursor.
func TestConcurrentAppendsFollower(t *testing.T) {
	t.Parallel()
	servers := servers(t, 2, 0)
	ref := leasedRow(t, servers[0], "op-follow", "", 0)
	const appenders, batches, per = 4, 150, 3
	wait := appendAtOnce(servers, ref, appenders, batches, func(g, b int) []api.LogLine {
		var lines []api.LogLine
		for i := range per {
			seq := int64((b*appenders+g)*per + i + 1)
			lines = append(lines, api.LogLine{Seq: seq, Time: time.Unix(0, seq), Stream: api.StreamStdout, Text: fmt.Sprintf("line %d", seq)})
		}
		return append(lines, api.LogLine{Time: time.Unix(0, 1), Stream: api.StreamSystem, Text: fmt.Sprintf("note %d/%d", g, b)})
	})
	done := make(chan struct{})
	var appendErr error
	go func() { appendErr = wait(); close(done) }()
	var seen []api.LogLine
	var after int64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		page, err := servers[1].Logs(t.Context(), ref.OperationID, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page {
			if l.Pos <= after {
				t.Fatalf("position %d after the cursor %d", l.Pos, after)
			}
			after = l.Pos
		}
		seen = append(seen, page...)
		if finished && len(page) == 0 {
			break
		}
	}
	if appendErr != nil {
		t.Fatal(appendErr)
	}
	all, err := servers[0].Logs(t.Context(), ref.OperationID, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if want := appenders * batches * (per + 1); len(all) != want {
		t.Fatalf("%d lines stored, want %d", len(all), want)
	}
	if len(seen) != len(all) {
		missed := map[int64]bool{}
		for _, l := range all {
			missed[l.Pos] = true
		}
		for _, l := range seen {
			delete(missed, l.Pos)
		}
		t.Fatalf("the follower saw %d of the %d lines: %d were committed behind its cursor", len(seen), len(all), len(missed))
	}
	var last int64
	if err := servers[0].pool.QueryRow(t.Context(), `SELECT last_seq FROM operations WHERE id = $1`, ref.OperationID).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if want := int64(appenders * batches * per); last != want {
		t.Errorf("last_seq = %d, want %d", last, want)
	}
}

// TestConcurrentAppendsLogLimit: appenders on two servers push one operation past its log limit at once,
// re-sending some lines; afterwards the log holds one marker that counts exactly what is missing, the bytes
// the operation records are those its chunks hold, and last_seq is the end.
func TestConcurrentAppendsLogLimit(t *testing.T) {
	t.Parallel()
	servers := servers(t, 2, 0)
	const limit = 32 << 10
	ref := leasedRow(t, servers[0], "op-cut", "", limit)
	const appenders, batches, per = 4, 100, 5
	line := func(seq int64) api.LogLine {
		return api.LogLine{Seq: seq, Time: time.Unix(0, seq), Stream: api.StreamStdout, Text: fmt.Sprintf("line %06d %s", seq, strings.Repeat("x", 60))}
	}
	wait := appendAtOnce(servers, ref, appenders, batches, func(g, b int) []api.LogLine {
		first := int64((b*appenders+g)*per + 1)
		var lines []api.LogLine
		for seq := max(1, first-2); seq < first+per; seq++ { // two lines of another batch again
			lines = append(lines, line(seq))
		}
		return lines
	})
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	const total = appenders * batches * per
	resp, err := servers[1].AppendLogs(t.Context(), ref, nil)
	if err != nil || resp.LastSeq != total || resp.Gap {
		t.Fatalf("AppendLogs(nothing) = %+v, %v; want last_seq %d and no gap", resp, err, total)
	}
	all, err := servers[0].Logs(t.Context(), ref.OperationID, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[int64]bool{}
	var markers []api.LogLine
	var keptBytes int64
	for _, l := range all {
		if l.Seq == 0 {
			markers = append(markers, l)
			continue
		}
		if kept[l.Seq] || l != (api.LogLine{Pos: l.Pos, Seq: l.Seq, Time: line(l.Seq).Time.UTC(), Stream: api.StreamStdout, Text: line(l.Seq).Text}) {
			t.Fatalf("line %+v stored twice or not as sent", l)
		}
		kept[l.Seq] = true
		keptBytes += store.LogLineBytes(l)
	}
	var lines, bytes int64
	for seq := int64(1); seq <= total; seq++ {
		if !kept[seq] {
			lines, bytes = lines+1, bytes+store.LogLineBytes(line(seq))
		}
	}
	if len(markers) != 1 || markers[0].Text != store.CutMarker(lines, bytes, limit) {
		t.Fatalf("markers %+v; want one: %q", markers, store.CutMarker(lines, bytes, limit))
	}
	var recorded int64
	if err := servers[0].pool.QueryRow(t.Context(), `SELECT log_bytes FROM operations WHERE id = $1`, ref.OperationID).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != keptBytes {
		t.Errorf("the operation records %d log bytes, its lines hold %d", recorded, keptBytes)
	}
	if keptBytes > limit+limit/16+int64(appenders)*store.LogLineBytes(line(total))*(per+2) {
		t.Errorf("%d bytes kept, over the limit %d plus a piece and a batch per appender", keptBytes, limit)
	}
}
