package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreatePool stores a new pool.
func (s *Store) CreatePool(ctx context.Context, p api.Pool) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO pools (name, description, created_at) VALUES ($1, $2, $3)`,
		p.Name, p.Description, nanos(p.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating pool %q: %w", p.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating pool %q: %w", p.Name, err)
	}
	return nil
}

const poolCols = `name, description, created_at`

func scanPool(row pgx.Row) (api.Pool, error) {
	var p api.Pool
	var created int64
	if err := row.Scan(&p.Name, &p.Description, &created); err != nil {
		return p, err
	}
	p.CreatedAt = fromNanos(created)
	return p, nil
}

// Pool returns one pool.
func (s *Store) Pool(ctx context.Context, name string) (api.Pool, error) {
	p, err := scanPool(s.pool.QueryRow(ctx, `SELECT `+poolCols+` FROM pools WHERE name = $1`, name))
	if err != nil {
		return p, readErr(err, "pool %q", name)
	}
	return p, nil
}

// ListPools returns every pool ordered by name.
func (s *Store) ListPools(ctx context.Context) ([]api.Pool, error) {
	pools, err := queryAll(ctx, s.pool, []api.Pool{}, scanPool, `SELECT `+poolCols+` FROM pools ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	return pools, nil
}
