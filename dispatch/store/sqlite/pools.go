package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreatePool stores a new pool.
func (s *Store) CreatePool(ctx context.Context, p api.Pool) error {
	_, err := s.wExec(ctx, `INSERT INTO pools (name, description, created_at) VALUES (?, ?, ?)`,
		p.Name, p.Description, nanos(p.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating pool %q: %w", p.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating pool %q: %w", p.Name, err)
	}
	return nil
}

// Pool returns one pool.
func (s *Store) Pool(ctx context.Context, name string) (api.Pool, error) {
	var p api.Pool
	var created int64
	err := s.rRow(ctx, `SELECT name, description, created_at FROM pools WHERE name = ?`, name).
		Scan(&p.Name, &p.Description, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("reading pool %q: %w", name, err)
	}
	p.CreatedAt = fromNanos(created)
	return p, nil
}

// ListPools returns every pool ordered by name.
func (s *Store) ListPools(ctx context.Context) ([]api.Pool, error) {
	rows, err := s.rQuery(ctx, `SELECT name, description, created_at FROM pools ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	defer rows.Close()
	pools := []api.Pool{}
	for rows.Next() {
		var p api.Pool
		var created int64
		if err := rows.Scan(&p.Name, &p.Description, &created); err != nil {
			return nil, fmt.Errorf("listing pools: %w", err)
		}
		p.CreatedAt = fromNanos(created)
		pools = append(pools, p)
	}
	return pools, rows.Err()
}
