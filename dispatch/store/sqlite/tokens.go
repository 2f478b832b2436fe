package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreateToken stores a registration token.
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	_, err := s.wExec(ctx, `INSERT INTO registration_tokens (id, hash, pools, created_at, expires_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?)`, t.ID, t.Hash, store.EncodeList(t.Pools), nanos(t.CreatedAt), nanos(t.ExpiresAt), nullNanos(t.RevokedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating token %s: %w", t.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating token %s: %w", t.ID, err)
	}
	return nil
}

const tokenCols = `id, hash, pools, created_at, expires_at, revoked_at`

func scanToken(row scanner) (store.Token, error) {
	var t store.Token
	var pools string
	var created, expires int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Hash, &pools, &created, &expires, &revoked); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(pools), &t.Pools); err != nil {
		return t, fmt.Errorf("decoding token pools: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromNanos(created), fromNanos(expires), timePtr(revoked)
	return t, nil
}

// TokenByHash returns the token whose secret hashes to hash.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (store.Token, error) {
	t, err := scanToken(s.rRow(ctx, `SELECT `+tokenCols+` FROM registration_tokens WHERE hash = ?`, hash))
	if err != nil {
		return t, readErr(err, "registration token")
	}
	return t, nil
}

// ListTokens returns every token, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	tokens, err := readAll(ctx, s, []store.Token{}, scanToken, `SELECT `+tokenCols+` FROM registration_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return tokens, nil
}

// RevokeToken marks a token revoked; a second revoke keeps the first time.
func (s *Store) RevokeToken(ctx context.Context, id string, now time.Time) (store.Token, error) {
	var t store.Token
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		t, err = scanToken(s.txRow(ctx, tx, `UPDATE registration_tokens SET revoked_at = COALESCE(revoked_at, ?)
			WHERE id = ? RETURNING `+tokenCols, nanos(now), id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("token %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("revoking token %s: %w", id, err)
	}
	return t, nil
}
