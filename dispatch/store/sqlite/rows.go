package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// opRow is an operation row (store.OpRow, read by store.ScanOp).
type opRow = store.OpRow

const opCols = store.OpCols

// scanOp reads opCols, followed by body and secrets when full is set.
func scanOp(row scanner, full bool) (opRow, error) { return store.ScanOp(row, full) }

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]api.Operation, error) {
	rows, err := s.rQuery(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	rs, err := scanOps(rows, false)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	ops := make([]api.Operation, 0, len(rs))
	for _, o := range rs {
		ops = append(ops, o.Operation)
	}
	return ops, nil
}

// scanOps reads every row of rows as scanOp does (see scanAll).
func scanOps(rows *sql.Rows, full bool) ([]opRow, error) {
	return scanAll(rows, nil, func(row scanner) (opRow, error) { return scanOp(row, full) })
}

// scanner is a row to scan: *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// scanAll appends every row of rows, read by scan, to list and closes rows (inside a transaction that must
// happen before the next statement). Pass an empty list for a result that is [] rather than nil when empty.
func scanAll[T any](rows *sql.Rows, list []T, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return list, nil
}

// readAll runs the query q on a reader and reads every row with scan into list (see scanAll).
func readAll[T any](ctx context.Context, s *Store, list []T, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.rQuery(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, list, scan)
}

// readErr is the error of reading the row of what (a format and its args, e.g. "operation %s", id):
// store.ErrNotFound when there is no such row.
func readErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("reading %s: %w", what, err)
}

// scanID reads a single text column, an id.
func scanID(row scanner) (string, error) {
	var id string
	err := row.Scan(&id)
	return id, err
}
