package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Retention's picks walk the partial indexes of migrations/0004_retention.sql (INDEXED BY: SQLite fails the
// statement rather than scan the table if they ever stop fitting), so a run costs what it deletes.
const (
	// pickOperationsSQL: the operations outside a deployment that ended before @before, oldest end first.
	pickOperationsSQL = `SELECT seq FROM operations INDEXED BY operations_finished
		WHERE deployment_id IS NULL AND finished_at < @before ORDER BY finished_at LIMIT @limit`
	// pickDeploymentsSQL: the deployments that ended before @before and whose steps all ended before it too,
	// with their number of steps, oldest end first.
	pickDeploymentsSQL = `SELECT d.id, (SELECT COUNT(*) FROM operations o WHERE o.deployment_id = d.id)
		FROM deployments d INDEXED BY deployments_finished
		WHERE d.finished_at < @before AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.deployment_id = d.id
			AND (o.finished_at IS NULL OR o.finished_at >= @before))
		ORDER BY d.finished_at LIMIT @limit`
)

// DeleteFinished deletes the history that ended before before, in writes of about batch operations; each
// write runs incremental_vacuum, and the WAL truncation after it shrinks the file.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("deleting finished operations: batch %d must be positive: %w", batch, store.ErrInvalid)
	}
	total := 0
	for {
		var n int
		var deleted bool
		err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var err error
			n, deleted, err = s.deleteBatch(ctx, tx, nanos(before), batch)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("deleting operations and deployments that ended before %s: %w", before.Format(time.RFC3339), err)
		}
		total += n
		if !deleted {
			return total, nil
		}
	}
}

// deleteBatch deletes up to batch operations outside deployments and, in what is left of batch, whole
// deployments (at least one), with their logs. It returns how many operations it deleted, and whether it
// deleted anything.
func (s *Store) deleteBatch(ctx context.Context, tx *sql.Tx, before int64, batch int) (n int, deleted bool, err error) {
	rows, err := s.txQuery(ctx, tx, pickOperationsSQL, sql.Named("before", before), sql.Named("limit", batch))
	if err != nil {
		return 0, false, fmt.Errorf("finding finished operations: %w", err)
	}
	ops, err := scanAll(rows, nil, func(r scanner) (int64, error) {
		var seq int64
		return seq, r.Scan(&seq)
	})
	if err != nil {
		return 0, false, fmt.Errorf("finding finished operations: %w", err)
	}
	n = len(ops)
	var deps []string
	if n < batch {
		rows, err := s.txQuery(ctx, tx, pickDeploymentsSQL, sql.Named("before", before), sql.Named("limit", batch-n))
		if err != nil {
			return 0, false, fmt.Errorf("finding finished deployments: %w", err)
		}
		type dep struct {
			id    string
			steps int
		}
		found, err := scanAll(rows, nil, func(r scanner) (dep, error) {
			var d dep
			return d, r.Scan(&d.id, &d.steps)
		})
		if err != nil {
			return 0, false, fmt.Errorf("finding finished deployments: %w", err)
		}
		for _, d := range found {
			if len(deps) > 0 && n+d.steps > batch {
				break
			}
			deps, n = append(deps, d.id), n+d.steps
		}
	}
	if len(ops) == 0 && len(deps) == 0 {
		return 0, false, nil
	}
	var deletes []string // each takes the JSON array of the operations' seqs or of the deployments' ids, as @ids
	var ids []byte
	if len(ops) > 0 {
		ids, _ = json.Marshal(ops)
		deletes = []string{
			`DELETE FROM log_chunks WHERE op_seq IN (SELECT value FROM json_each(@ids))`,
			`DELETE FROM operations WHERE seq IN (SELECT value FROM json_each(@ids))`,
		}
	}
	if err := s.deleteAll(ctx, tx, deletes, ids); err != nil {
		return 0, false, fmt.Errorf("deleting %d operations: %w", len(ops), err)
	}
	deletes = nil
	if len(deps) > 0 {
		ids, _ = json.Marshal(deps)
		deletes = []string{
			`DELETE FROM log_chunks WHERE op_seq IN (SELECT seq FROM operations WHERE deployment_id IN (SELECT value FROM json_each(@ids)))`,
			`DELETE FROM operations WHERE deployment_id IN (SELECT value FROM json_each(@ids))`,
			`DELETE FROM deployments WHERE id IN (SELECT value FROM json_each(@ids))`,
		}
	}
	if err := s.deleteAll(ctx, tx, deletes, ids); err != nil {
		return 0, false, fmt.Errorf("deleting %d deployments: %w", len(deps), err)
	}
	if _, err := s.txExec(ctx, tx, `PRAGMA incremental_vacuum`); err != nil {
		return 0, false, fmt.Errorf("giving freed pages back: %w", err)
	}
	s.truncateSoon()
	return n, true, nil
}

// deleteAll runs each statement of deletes with ids bound to @ids.
func (s *Store) deleteAll(ctx context.Context, tx *sql.Tx, deletes []string, ids []byte) error {
	for _, q := range deletes {
		if _, err := s.txExec(ctx, tx, q, sql.Named("ids", string(ids))); err != nil {
			return err
		}
	}
	return nil
}
