package sqlite

import (
	"database/sql"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// TestLongReadDoesNotHoldUpTheWriter: a backup holds one read transaction for as long as it copies (minutes,
// on a large file), and a WAL truncation cannot complete meanwhile. The writer's attempt gives up at once
// instead of waiting for the reader (which would hold up every write for the busy timeout, again and again),
// writes go on, and the truncation completes once the reader is done: the erased value then leaves the disk.
func TestLongReadDoesNotHoldUpTheWriter(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	reader, err := sql.Open("sqlite", sqlitedsn.Backup(f.path))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	long, err := reader.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback()
	var n int
	if err := long.QueryRow(`SELECT count(*) FROM operations`).Scan(&n); err != nil { // the snapshot starts here
		t.Fatal(err)
	}

	const secret = "held-back-by-a-reader"
	f.enqueue(t, f.spec(secret))
	ref := f.running(t)
	f.live(t, secret)
	f.finish(t, ref, api.StateSucceeded, 0)
	// The bound is the writer's busy timeout (10 s), which the attempt waited for before; it takes 0.1 s.
	select {
	case done := <-f.truncated:
		if done {
			t.Fatal("the WAL was truncated while a reader held an older snapshot: the test does not hold one")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the WAL truncation still waits for the reader after 5s: every write waits with it")
	}
	if err := f.s.CreatePool(t.Context(), api.Pool{Name: "during", CreatedAt: f.now}); err != nil {
		t.Fatal(err)
	}
	if err := long.Rollback(); err != nil {
		t.Fatal(err)
	}
	for !<-f.truncated {
	}
	if in := f.holding(t, secret); len(in) != 0 {
		t.Errorf("after the reader ended and the WAL was truncated, the sensitive value is still in %v", in)
	}
}
