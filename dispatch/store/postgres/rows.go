package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// opRow is an operation row (store.OpRow, read by store.ScanOp).
type opRow = store.OpRow

const opCols = store.OpCols

// opColsFull is opCols with the body and the sensitive values: what a lease needs.
const opColsFull = opCols + `, body, secrets`

// scanOp reads opCols, followed by body and secrets when full is set.
func scanOp(row pgx.Row, full bool) (opRow, error) { return store.ScanOp(row, full) }

// queryAll runs q on q's querier and reads every row with scan into list (pass an empty list for a result
// that is [] rather than nil when empty).
func queryAll[T any](ctx context.Context, db querier, list []T, scan func(pgx.Row) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	return list, rows.Err()
}

// querier is the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanOps(ctx context.Context, db querier, full bool, q string, args ...any) ([]opRow, error) {
	return queryAll(ctx, db, nil, func(r pgx.Row) (opRow, error) { return scanOp(r, full) }, q, args...)
}

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]api.Operation, error) {
	rs, err := scanOps(ctx, s.pool, false, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	ops := make([]api.Operation, 0, len(rs))
	for _, o := range rs {
		ops = append(ops, o.Operation)
	}
	return ops, nil
}

// readErr is the error of reading the row of what (a format and its args, e.g. "operation %s", id):
// store.ErrNotFound when there is no such row.
func readErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("reading %s: %w", what, err)
}

// scanID reads a single text column, an id.
func scanID(row pgx.Row) (string, error) {
	var id string
	err := row.Scan(&id)
	return id, err
}
