package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// QueueStats returns every pool's queue, with the SQLite driver's statement: the first in line is one look-up
// by primary key per pool, and its deployment's previous step one by operations_deployment.
func (s *Store) QueueStats(ctx context.Context) ([]store.PoolQueue, error) {
	rows, err := s.pool.Query(ctx, `
		WITH q AS (
			SELECT p.name AS pool, COUNT(o.seq) AS depth, MIN(o.seq) AS first
			FROM pools p LEFT JOIN operations o
				ON o.pool = p.name AND o.state = 'queued' AND o.ready
			GROUP BY p.name)
		SELECT q.pool, q.depth, COALESCE((
			SELECT COALESCE(prev.finished_at, f.created_at) FROM operations f
			LEFT JOIN operations prev ON prev.deployment_id = f.deployment_id AND prev.step = f.step - 1
			WHERE f.seq = q.first), 0)
		FROM q ORDER BY q.pool`)
	if err != nil {
		return nil, fmt.Errorf("reading the queue of every pool: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.PoolQueue, error) {
		var q store.PoolQueue
		var since int64
		if err := r.Scan(&q.Pool, &q.Depth, &since); err != nil {
			return q, err
		}
		if q.Depth > 0 {
			q.FirstSince = fromNanos(since)
		}
		return q, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the queue of every pool: %w", err)
	}
	if out == nil {
		out = []store.PoolQueue{}
	}
	return out, nil
}
