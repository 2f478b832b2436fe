package sqlite

import (
	"path/filepath"
	"testing"
)

// TestCheckpointsOffTheWriter: the writer's commits never checkpoint the WAL themselves (a checkpoint syncs
// the file and held up every write queued behind it); the checkpointer copies what they wrote.
func TestCheckpointsOffTheWriter(t *testing.T) {
	t.Parallel()
	copied := make(chan int, 100)
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "dispatch.db"), func(s *Store) {
		s.checkpointed = func(_, n int) {
			select {
			case copied <- n:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var auto int
	if err := s.w.QueryRowContext(t.Context(), `PRAGMA wal_autocheckpoint`).Scan(&auto); err != nil {
		t.Fatal(err)
	}
	if auto != 0 {
		t.Fatalf("the writer checkpoints after %d WAL pages, want never (0)", auto)
	}
	ensureWorker(t, s, "w")
	for n := range copied {
		if n > 0 {
			break
		}
	}
}
