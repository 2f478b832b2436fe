package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// What the store keeps off the disk, and how:
//
//   - The database file, its WAL and its shared-memory file, and the key file beside them (KeysPath), are
//     readable by their owner only: Open creates the database 0600 (SQLite gives the WAL and shared-memory
//     files the database's mode; the key file is written 0600) and makes existing files 0600 (makePrivate).
//   - A sensitive value is never written in clear to the database or its WAL: it is sealed under a key kept in
//     the key file (keyring.go), and soon after its operation ends that key is retired (every value still
//     live under it is sealed again under another key and the key leaves the file). Every way an operation
//     ends also sets its sealed columns to NULL in the same write, and the writer runs with secure_delete
//     (sqlitedsn), so SQLite zeroes the bytes of the old value in the page and every page it frees.
//   - Freed pages go back to the file system: the database uses auto_vacuum=INCREMENTAL (autoVacuum) and
//     DeleteFinished runs incremental_vacuum in the write that deletes; truncateDelay after it the writer
//     copies the WAL into the database and truncates both (truncateWAL). Close truncates too when one is due.
//     Until the sealed values, the erasure of a value was such a truncation after each end: it held the
//     single writer while readers left the WAL and it copied and synced, the tail of the hand-off's latency
//     with 10,000 workers waiting (ARCHITECTURE.md, Capacity).

// truncateDelay is how long after a commit that deleted history the WAL is truncated.
const truncateDelay = 200 * time.Millisecond

// A truncation waits at most truncateWait (milliseconds) for readers to leave the WAL, and one that readers
// kept from completing is tried again after a delay that doubles from truncateDelay up to truncateRetryMax.
// The writer waits with it, so the wait is short: a reader of the server is done within it, but a backup
// holds one read transaction for as long as it copies (see Backup), and waiting the busy timeout for it
// would hold up every write, again and again.
const (
	truncateWait     = "100"
	truncateRetryMax = time.Second
)

// truncateSoon makes the writer truncate the WAL truncateDelay after the current group commits. Writes call
// it when they delete history; it runs on the writer goroutine.
func (s *Store) truncateSoon() { s.shrink = true }

// truncateWAL checkpoints the WAL into the database file and truncates it to zero bytes. It reports false
// when readers still used the old pages, so it could not complete: the caller tries again later. An error is
// logged, not retried (the next deletion tries again). It must not run inside a transaction (the writer
// calls it between groups).
func (s *Store) truncateWAL() bool {
	s.cpMu.Lock() // a checkpoint in progress would make SQLite refuse the truncation as busy
	defer s.cpMu.Unlock()
	ctx := context.Background()
	var busy, frames, copied int
	_, err := s.w.ExecContext(ctx, `PRAGMA busy_timeout = `+truncateWait)
	if err == nil {
		err = s.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied)
		if _, rerr := s.w.ExecContext(ctx, `PRAGMA busy_timeout = `+sqlitedsn.BusyTimeout); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring the busy timeout: %w", rerr))
		}
	}
	if err != nil {
		s.log.WithError(err).Error("truncating the WAL (retried at the next deletion)")
	}
	if s.truncated != nil {
		s.truncated(err == nil && busy == 0)
	}
	return err != nil || busy == 0
}

// makePrivate makes the database file at path and its WAL and shared-memory files, those that exist, readable
// and writable by their owner only (0600) when others could read or write them; it logs each change.
func makePrivate(path string, log *logrus.Entry) error {
	for _, name := range []string{path, path + "-wal", path + "-shm", KeysPath(path)} {
		info, err := os.Stat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("checking the mode of %s: %w", name, err)
		}
		old := info.Mode().Perm()
		if old&0o077 == 0 {
			continue
		}
		if err := os.Chmod(name, 0o600); err != nil {
			return fmt.Errorf("%s has mode %#o (others may read it; it holds sensitive values) and making it 0600 failed: %w; run chmod 600 %s as its owner",
				name, old, err, name)
		}
		log.WithField("file", name).WithField("old_mode", fmt.Sprintf("%#o", old)).
			Warn("database file was open to other users; made it 0600 (it holds sensitive values)")
	}
	return nil
}

// autoVacuum makes sure the database uses auto_vacuum=INCREMENTAL, so that incremental_vacuum can give freed
// pages back to the file system. The writer's connection asks for it (sqlitedsn), which a new database gets
// before its first page; an existing one without it is rebuilt once with VACUUM (logged: it takes a while on a
// large file). Call it before the writer goroutine starts.
func (s *Store) autoVacuum(ctx context.Context) error {
	const incremental = 2
	var mode int
	if err := s.w.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return fmt.Errorf("reading auto_vacuum: %w", err)
	}
	if mode == incremental {
		return nil
	}
	log := s.log.WithField("auto_vacuum", mode)
	log.Warn("converting the database to incremental auto-vacuum, once (VACUUM rewrites the whole file; wait for it)")
	start := time.Now()
	if _, err := s.w.ExecContext(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("converting the database to incremental auto-vacuum (VACUUM needs free disk space about the size of the file): %w", err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil || mode != incremental {
		return fmt.Errorf("converting the database to incremental auto-vacuum: auto_vacuum is %d after VACUUM (%v)", mode, err)
	}
	s.truncateWAL()
	log.WithField("took", time.Since(start).Round(time.Millisecond).String()).Info("database converted to incremental auto-vacuum")
	return nil
}
