package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Retention's picks walk the partial indexes operations_finished and deployments_finished, so a run costs
// what it deletes. They lock what they pick and skip what another server's run has locked (SKIP LOCKED), so
// several servers may run retention at once: each deletes its own batches, none waits for another.
const (
	// pickOperationsSQL: the operations outside a deployment that ended before $1, oldest end first.
	pickOperationsSQL = `SELECT seq FROM operations
		WHERE deployment_id IS NULL AND finished_at IS NOT NULL AND finished_at < $1
		ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED`
	// pickDeploymentsSQL: the deployments that ended before $1 and whose steps all ended before it too, with
	// their number of steps, oldest end first.
	pickDeploymentsSQL = `SELECT d.id, (SELECT COUNT(*) FROM operations o WHERE o.deployment_id = d.id)
		FROM deployments d
		WHERE d.finished_at IS NOT NULL AND d.finished_at < $1 AND NOT EXISTS (SELECT 1 FROM operations o
			WHERE o.deployment_id = d.id AND (o.finished_at IS NULL OR o.finished_at >= $1))
		ORDER BY d.finished_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED`
)

// DeleteFinished deletes the history that ended before before, in transactions of about batch operations;
// then it vacuums the tables it deleted from (erase.go), which gives their free space back.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, fmt.Errorf("deleting finished operations: batch %d must be positive: %w", batch, store.ErrInvalid)
	}
	total := 0
	for {
		var n int
		var deleted bool
		err := s.tx(ctx, func(tx pgx.Tx) error {
			var err error
			n, deleted, err = deleteBatch(ctx, tx, nanos(before), batch)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("deleting operations and deployments that ended before %s: %w", before.Format(time.RFC3339), err)
		}
		total += n
		if !deleted {
			break
		}
	}
	if total > 0 {
		s.vacuum(ctx, historyTables)
	}
	return total, nil
}

// deleteBatch deletes up to batch operations outside deployments and, in what is left of batch, whole
// deployments (at least one), with their logs. It returns how many operations it deleted, and whether it
// deleted anything.
func deleteBatch(ctx context.Context, tx pgx.Tx, before int64, batch int) (n int, deleted bool, err error) {
	rows, err := tx.Query(ctx, pickOperationsSQL, before, batch)
	if err != nil {
		return 0, false, fmt.Errorf("finding finished operations: %w", err)
	}
	ops, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, false, fmt.Errorf("finding finished operations: %w", err)
	}
	n = len(ops)
	var deps []string
	if n < batch {
		rows, err := tx.Query(ctx, pickDeploymentsSQL, before, batch-n)
		if err != nil {
			return 0, false, fmt.Errorf("finding finished deployments: %w", err)
		}
		var id string
		var steps int
		full := false
		if _, err := pgx.ForEachRow(rows, []any{&id, &steps}, func() error {
			if full = full || (len(deps) > 0 && n+steps > batch); !full {
				deps, n = append(deps, id), n+steps
			}
			return nil
		}); err != nil {
			return 0, false, fmt.Errorf("finding finished deployments: %w", err)
		}
	}
	if len(ops) == 0 && len(deps) == 0 {
		return 0, false, nil
	}
	if len(deps) > 0 {
		// Their steps join the operations to delete; operation_packages goes with them (ON DELETE CASCADE).
		rows, err := tx.Query(ctx, `SELECT seq FROM operations WHERE deployment_id = ANY($1)`, deps)
		if err != nil {
			return 0, false, fmt.Errorf("finding the steps of %d deployments: %w", len(deps), err)
		}
		steps, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return 0, false, fmt.Errorf("finding the steps of %d deployments: %w", len(deps), err)
		}
		ops = append(ops, steps...)
	}
	for _, q := range []struct {
		sql  string
		args any
	}{
		{`DELETE FROM log_chunks WHERE op_seq = ANY($1)`, ops},
		{`DELETE FROM operations WHERE seq = ANY($1)`, ops},
		{`DELETE FROM deployments WHERE id = ANY($1)`, deps},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args); err != nil {
			return 0, false, fmt.Errorf("deleting %d operations and %d deployments: %w", len(ops), len(deps), err)
		}
	}
	return n, true, nil
}
