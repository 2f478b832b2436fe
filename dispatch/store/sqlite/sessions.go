package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// StartSession stores a portal login after deleting the ended ones and, past store.MaxSessions, the ones
// ending first.
func (s *Store) StartSession(ctx context.Context, ss store.Session) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.txExec(ctx, tx, `DELETE FROM portal_sessions WHERE expires_at <= ?`, nanos(ss.Started)); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM portal_sessions WHERE hash IN (
			SELECT hash FROM portal_sessions ORDER BY expires_at DESC, hash LIMIT -1 OFFSET ?)`, store.MaxSessions-1); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `INSERT INTO portal_sessions (hash, csrf, started_at, expires_at) VALUES (?, ?, ?, ?)`,
			ss.Hash, ss.CSRF, nanos(ss.Started), nanos(ss.Expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("storing a portal login: %w", err)
	}
	return nil
}

// Session returns the portal login whose cookie hashes to hash, live at now.
func (s *Store) Session(ctx context.Context, hash []byte, now time.Time) (store.Session, error) {
	ss := store.Session{Hash: hash}
	var started, expires int64
	err := s.rRow(ctx, `SELECT csrf, started_at, expires_at FROM portal_sessions WHERE hash = ? AND expires_at > ?`,
		hash, nanos(now)).Scan(&ss.CSRF, &started, &expires)
	if err != nil {
		return ss, readErr(err, "portal login")
	}
	ss.Started, ss.Expires = fromNanos(started), fromNanos(expires)
	return ss, nil
}

// EndSession deletes a portal login.
func (s *Store) EndSession(ctx context.Context, hash []byte) error {
	if _, err := s.wExec(ctx, `DELETE FROM portal_sessions WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("ending a portal login: %w", err)
	}
	return nil
}
