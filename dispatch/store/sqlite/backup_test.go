package sqlite

import (
	"database/sql"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// longRead opens a read transaction on the database at path and reads in it, so its snapshot starts, as a
// backup's does for as long as it copies (minutes, on a large file).
func longRead(t *testing.T, path string) *sql.Tx {
	t.Helper()
	reader, err := sql.Open("sqlite", sqlitedsn.Backup(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	long, err := reader.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = long.Rollback() })
	var n int
	if err := long.QueryRow(`SELECT count(*) FROM operations`).Scan(&n); err != nil { // the snapshot starts here
		t.Fatal(err)
	}
	return long
}

// TestLongReadDoesNotHoldUpErasure: an ended operation's key leaves the key file while a reader holds a
// snapshot from before the end (erasure does not wait for readers to leave the WAL).
func TestLongReadDoesNotHoldUpErasure(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	long := longRead(t, f.path)
	const secret = "erased-beside-a-reader"
	f.enqueue(t, f.spec(secret))
	ref := f.running(t)
	key := f.live(t, secret)
	f.finish(t, ref, api.StateSucceeded, 0)
	f.retired(t, key)
	var n int
	if err := long.QueryRow(`SELECT count(*) FROM operations`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the reader sees %d operations (%v); want its snapshot from before the enqueue, 0: the test does not hold one", n, err)
	}
}

// TestLongReadDoesNotHoldUpTheWriter: a WAL truncation (after history is deleted) cannot complete while a
// reader holds an older snapshot. The writer's attempt gives up at once instead of waiting for the reader
// (which would hold up every write for the busy timeout, again and again), writes go on, and the truncation
// completes once the reader is done.
func TestLongReadDoesNotHoldUpTheWriter(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	f.enqueue(t, f.spec("v"))
	f.finish(t, f.running(t), api.StateSucceeded, 0)
	long := longRead(t, f.path)
	if n, err := f.s.DeleteFinished(t.Context(), f.now.Add(time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("DeleteFinished = %d, %v; want 1 deleted", n, err)
	}
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
}
