package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Operation returns one operation with its spec; sensitive values are masked.
func (s *Store) Operation(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.pool.QueryRow(ctx, `SELECT `+opCols+`, body, NULL FROM operations WHERE id = $1`, id), true)
	if err != nil {
		return api.Operation{}, readErr(err, "operation %s", id)
	}
	return o.Operation, nil
}

// OperationSummary returns one operation without its body.
func (s *Store) OperationSummary(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.pool.QueryRow(ctx, `SELECT `+opCols+` FROM operations WHERE id = $1`, id), false)
	if err != nil {
		return api.Operation{}, readErr(err, "operation %s", id)
	}
	return o.Operation, nil
}

// ListOperations returns operation summaries, newest first.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]api.Operation, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.State != "" {
		add("state = $%d", f.State)
	}
	if f.Pool != "" {
		add("pool = $%d", f.Pool)
	}
	if f.WorkerID != "" {
		add("worker_id = $%d", f.WorkerID)
	}
	if f.DeploymentID != "" {
		add("deployment_id = $%d", f.DeploymentID)
	}
	q := `SELECT ` + opCols + ` FROM operations`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY seq DESC LIMIT $%d", len(args))
	return s.queryOps(ctx, q, args...)
}

// SensitiveValues returns the sensitive values of an operation that has not ended.
func (s *Store) SensitiveValues(ctx context.Context, id string) ([]string, error) {
	var secrets *string
	err := s.pool.QueryRow(ctx, `SELECT secrets FROM operations WHERE id = $1`, id).Scan(&secrets)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading sensitive values of %s: %w", id, err)
	}
	if secrets == nil {
		return nil, nil
	}
	values, err := store.SensitiveValues(*secrets)
	if err != nil {
		return nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return values, nil
}
