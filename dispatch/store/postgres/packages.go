package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

const packageCols = `name, version, sha256, size, file_name, created_at`

func scanPackage(r pgx.Row) (api.Package, error) {
	var p api.Package
	var created int64
	err := r.Scan(&p.Name, &p.Version, &p.SHA256, &p.Size, &p.FileName, &created)
	p.CreatedAt = fromNanos(created)
	return p, err
}

// CreatePackage stores a package, or returns the one stored under its name and version when it has the same
// content. The insert skips a name and version stored already (by another server too), then the stored one
// decides.
func (s *Store) CreatePackage(ctx context.Context, p api.Package) (api.Package, error) {
	var out api.Package
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = p
		out.CreatedAt = p.CreatedAt.UTC()
		tag, err := tx.Exec(ctx, `INSERT INTO packages (`+packageCols+`) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name, version) DO NOTHING`, p.Name, p.Version, p.SHA256, p.Size, p.FileName, nanos(p.CreatedAt))
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		old, err := scanPackage(tx.QueryRow(ctx, `SELECT `+packageCols+` FROM packages WHERE name = $1 AND version = $2`, p.Name, p.Version))
		if err != nil {
			return err
		}
		if old.SHA256 != p.SHA256 {
			return fmt.Errorf("package %s@%s holds other content (sha256:%s): push this one under another version: %w", p.Name, p.Version, old.SHA256, store.ErrExists)
		}
		out = old
		return nil
	})
	if err != nil {
		return api.Package{}, fmt.Errorf("storing package %s@%s: %w", p.Name, p.Version, err)
	}
	return out, nil
}

// Package resolves a reference.
func (s *Store) Package(ctx context.Context, ref api.PackageRef) (api.Package, error) {
	q, arg := `SELECT `+packageCols+` FROM packages WHERE name = $1 AND version = $2`, ref.Version
	if ref.SHA256 != "" {
		q, arg = `SELECT `+packageCols+` FROM packages WHERE name = $1 AND sha256 = $2 ORDER BY created_at LIMIT 1`, ref.SHA256
	}
	p, err := scanPackage(s.pool.QueryRow(ctx, q, ref.Name, arg))
	if err != nil {
		return p, readErr(err, "package %s", ref)
	}
	return p, nil
}

// ListPackages returns every package.
func (s *Store) ListPackages(ctx context.Context) ([]api.Package, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+packageCols+` FROM packages ORDER BY name, created_at DESC, version`)
	if err != nil {
		return nil, fmt.Errorf("listing packages: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.Package, error) { return scanPackage(r) })
	if err != nil {
		return nil, fmt.Errorf("listing packages: %w", err)
	}
	if list == nil {
		list = []api.Package{}
	}
	return list, nil
}

// DeletePackages deletes the packages created before before that no operation references.
//
// With several servers an operation that references one of them may be submitted meanwhile. So the
// candidates are locked first (FOR UPDATE, skipping those an operation's insert holds right now: its foreign
// key check locks the package until it commits); then the delete re-checks the references in a statement of
// its own, whose snapshot sees every reference committed before the lock. An operation inserted later waits
// for this transaction and then fails its foreign key check, which its submit reports.
func (s *Store) DeletePackages(ctx context.Context, before time.Time) ([]string, error) {
	var unused []string
	err := s.tx(ctx, func(tx pgx.Tx) error {
		unused = nil
		var names, versions []string
		rows, err := tx.Query(ctx, `SELECT name, version FROM packages WHERE created_at < $1 AND NOT EXISTS (
			SELECT 1 FROM operation_packages r WHERE r.name = packages.name AND r.version = packages.version)
			FOR UPDATE SKIP LOCKED`, nanos(before))
		if err != nil {
			return fmt.Errorf("finding unused packages: %w", err)
		}
		var name, version string
		if _, err := pgx.ForEachRow(rows, []any{&name, &version}, func() error {
			names, versions = append(names, name), append(versions, version)
			return nil
		}); err != nil {
			return fmt.Errorf("finding unused packages: %w", err)
		}
		if len(names) == 0 {
			return nil
		}
		rows, err = tx.Query(ctx, `DELETE FROM packages p USING unnest($1::text[], $2::text[]) AS c (name, version)
			WHERE p.name = c.name AND p.version = c.version AND NOT EXISTS (
				SELECT 1 FROM operation_packages r WHERE r.name = p.name AND r.version = p.version)
			RETURNING p.sha256`, names, versions)
		if err != nil {
			return fmt.Errorf("deleting unused packages: %w", err)
		}
		deleted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("deleting unused packages: %w", err)
		}
		rows, err = tx.Query(ctx, `SELECT DISTINCT d FROM unnest($1::text[]) AS d
			WHERE NOT EXISTS (SELECT 1 FROM packages WHERE sha256 = d)`, deleted)
		if err != nil {
			return fmt.Errorf("finding content no package names: %w", err)
		}
		unused, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deleting packages created before %s: %w", before.Format(time.RFC3339), err)
	}
	return unused, nil
}
