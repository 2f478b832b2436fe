package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// StartSession stores a portal login after deleting the ended ones and, past store.MaxSessions, the ones
// ending first.
func (s *Store) StartSession(ctx context.Context, ss store.Session) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM portal_sessions WHERE expires_at <= $1`, nanos(ss.Started)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM portal_sessions WHERE hash IN (
			SELECT hash FROM portal_sessions ORDER BY expires_at DESC, hash OFFSET $1)`, store.MaxSessions-1); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO portal_sessions (hash, csrf, started_at, expires_at) VALUES ($1, $2, $3, $4)`,
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
	err := s.pool.QueryRow(ctx, `SELECT csrf, started_at, expires_at FROM portal_sessions WHERE hash = $1 AND expires_at > $2`,
		hash, nanos(now)).Scan(&ss.CSRF, &started, &expires)
	if err != nil {
		return ss, readErr(err, "portal login")
	}
	ss.Started, ss.Expires = fromNanos(started), fromNanos(expires)
	return ss, nil
}

// EndSession deletes a portal login.
func (s *Store) EndSession(ctx context.Context, hash []byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM portal_sessions WHERE hash = $1`, hash); err != nil {
		return fmt.Errorf("ending a portal login: %w", err)
	}
	return nil
}
