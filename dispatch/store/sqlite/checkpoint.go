package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// Checkpoints off the writer: SQLite copies the WAL back into the database file (a checkpoint) by itself
// when a commit leaves the WAL past 1,000 pages, inside that commit, and a checkpoint syncs the file. With
// thousands of idle workers that was a commit every second or so taking 20 to 120 ms on the single writer,
// and every write queued behind it (a submit handed to a waiting worker among them). So the writer does not
// checkpoint by itself (wal_autocheckpoint=0): a goroutine on a connection of its own runs a PASSIVE
// checkpoint every checkpointEvery after commits, beside the writer (a PASSIVE checkpoint never blocks it,
// and waits for no reader: what readers still use is copied by the next one). The WAL's length is bounded as
// before: by what the writer commits in checkpointEvery, plus what a long reader keeps from being copied.
// The truncation after erasures (truncateWAL) still runs on the writer, as it must hold writes off; it waits
// for a checkpoint in progress (cpMu), else SQLite would refuse it as busy.

// checkpointEvery is how often the WAL is checkpointed while writes come.
const checkpointEvery = 250 * time.Millisecond

// openCheckpointer stops the writer's own checkpoints and opens the checkpointer's connection.
func (s *Store) openCheckpointer(ctx context.Context, path string) error {
	if _, err := s.w.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		return fmt.Errorf("turning off the writer's checkpoints: %w", err)
	}
	c, err := sql.Open("sqlite", sqlitedsn.DSN(path, false))
	if err != nil {
		return fmt.Errorf("opening the checkpointer's connection: %w", err)
	}
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	c.SetConnMaxLifetime(0)
	c.SetConnMaxIdleTime(0)
	s.c = c
	return nil
}

// checkpointer checkpoints the WAL every checkpointEvery when the writer committed since, until stop is
// closed.
func (s *Store) checkpointer(stop <-chan struct{}) {
	defer close(s.cpStopped)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		// A truncation (truncateWAL) in progress checkpoints everything itself.
		if s.cpMu.TryLock() {
			if s.committed.Swap(false) {
				s.checkpoint()
			}
			s.cpMu.Unlock()
		}
	}
}

// checkpointAside runs a PASSIVE checkpoint beside the writer, which goes on committing, and closes the
// returned channel when it is done. The writer runs it before a due WAL truncation: the truncation, which
// holds writes up, then copies only what was committed meanwhile. In the 10,000-worker benchmark (operations
// ending all the time) that took a truncation from 7 ms to 1.6 ms at the median and 15 ms to 3.5 ms at the
// 90th percentile; the checkpoint itself, 3 to 11 ms, no longer holds anything up.
func (s *Store) checkpointAside() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.cpMu.Lock()
		defer s.cpMu.Unlock()
		s.checkpoint()
	}()
	return done
}

// checkpoint runs one PASSIVE checkpoint; an error is logged (the next one tries again).
func (s *Store) checkpoint() {
	var busy, frames, copied int
	if err := s.c.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
		s.log.WithError(err).Warn("checkpointing the WAL (the next checkpoint tries again)")
		return
	}
	if s.checkpointed != nil {
		s.checkpointed(frames, copied)
	}
}
