package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Operation returns one operation with its spec; sensitive values are masked.
func (s *Store) Operation(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.rRow(ctx, `SELECT `+opCols+`, body, NULL FROM operations WHERE id = ?`, id), true)
	if err != nil {
		return api.Operation{}, readErr(err, "operation %s", id)
	}
	return o.Operation, nil
}

// OperationSummary returns one operation without its body.
func (s *Store) OperationSummary(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.rRow(ctx, `SELECT `+opCols+` FROM operations WHERE id = ?`, id), false)
	if err != nil {
		return api.Operation{}, readErr(err, "operation %s", id)
	}
	return o.Operation, nil
}

// ListOperations returns operation summaries, newest first.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]api.Operation, error) {
	var where []string
	var args []any
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Pool != "" {
		where, args = append(where, "pool = ?"), append(args, f.Pool)
	}
	if f.WorkerID != "" {
		where, args = append(where, "worker_id = ?"), append(args, f.WorkerID)
	}
	if f.DeploymentID != "" {
		where, args = append(where, "deployment_id = ?"), append(args, f.DeploymentID)
	}
	q := `SELECT ` + opCols + ` FROM operations`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY seq DESC LIMIT ?"
	args = append(args, limit)
	return s.queryOps(ctx, q, args...)
}

// SensitiveValues returns the sensitive values of an operation that has not ended.
func (s *Store) SensitiveValues(ctx context.Context, id string) ([]string, error) {
	var secrets sql.NullString
	err := s.rRow(ctx, `SELECT secrets FROM operations WHERE id = ?`, id).Scan(&secrets)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading sensitive values of %s: %w", id, err)
	}
	if !secrets.Valid {
		return nil, nil
	}
	plain, err := s.openSecrets(secrets.String)
	if err != nil {
		return nil, fmt.Errorf("operation %s: %w", id, err)
	}
	values, err := store.SensitiveValues(plain)
	if err != nil {
		return nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return values, nil
}
