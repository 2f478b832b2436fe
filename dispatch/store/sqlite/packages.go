package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

const packageCols = `name, version, sha256, size, file_name, created_at`

func scanPackage(r scanner) (api.Package, error) {
	var p api.Package
	var created int64
	err := r.Scan(&p.Name, &p.Version, &p.SHA256, &p.Size, &p.FileName, &created)
	p.CreatedAt = fromNanos(created)
	return p, err
}

// CreatePackage stores a package, or returns the one stored under its name and version when it has the same
// content.
func (s *Store) CreatePackage(ctx context.Context, p api.Package) (api.Package, error) {
	var out api.Package
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		old, err := scanPackage(s.txRow(ctx, tx, `SELECT `+packageCols+` FROM packages WHERE name = ? AND version = ?`, p.Name, p.Version))
		switch {
		case err == nil && old.SHA256 == p.SHA256:
			out = old
			return nil
		case err == nil:
			return fmt.Errorf("package %s@%s holds other content (sha256:%s): push this one under another version: %w", p.Name, p.Version, old.SHA256, store.ErrExists)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = s.txExec(ctx, tx, `INSERT INTO packages (`+packageCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			p.Name, p.Version, p.SHA256, p.Size, p.FileName, nanos(p.CreatedAt))
		out = p
		out.CreatedAt = p.CreatedAt.UTC()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("storing package %s@%s: %w", p.Name, p.Version, err)
	}
	return out, nil
}

// Package resolves a reference.
func (s *Store) Package(ctx context.Context, ref api.PackageRef) (api.Package, error) {
	q, arg := `SELECT `+packageCols+` FROM packages WHERE name = ? AND version = ?`, ref.Version
	if ref.SHA256 != "" {
		q, arg = `SELECT `+packageCols+` FROM packages WHERE name = ? AND sha256 = ? ORDER BY created_at LIMIT 1`, ref.SHA256
	}
	p, err := scanPackage(s.rRow(ctx, q, ref.Name, arg))
	if err != nil {
		return p, readErr(err, "package %s", ref)
	}
	return p, nil
}

// ListPackages returns every package.
func (s *Store) ListPackages(ctx context.Context) ([]api.Package, error) {
	rows, err := s.rQuery(ctx, `SELECT `+packageCols+` FROM packages ORDER BY name, created_at DESC, version`)
	if err != nil {
		return nil, fmt.Errorf("listing packages: %w", err)
	}
	list, err := scanAll(rows, []api.Package{}, scanPackage)
	if err != nil {
		return nil, fmt.Errorf("listing packages: %w", err)
	}
	return list, nil
}

// insertPackageRefs records the packages an operation (inserted in this transaction) references. The
// foreign key refuses a package that is not stored.
func (s *Store) insertPackageRefs(ctx context.Context, tx *sql.Tx, opID string, pkgs []api.Package) error {
	for i, p := range pkgs {
		_, err := s.txExec(ctx, tx, `INSERT INTO operation_packages (op_seq, idx, name, version)
			SELECT seq, ?, ?, ? FROM operations WHERE id = ?`, i, p.Name, p.Version, opID)
		if err != nil {
			if strings.Contains(err.Error(), "FOREIGN KEY constraint failed") {
				return fmt.Errorf("package %s@%s is no longer stored (retention deleted it meanwhile): push it again: %w", p.Name, p.Version, store.ErrInvalid)
			}
			return fmt.Errorf("recording package %s@%s of operation %s: %w", p.Name, p.Version, opID, err)
		}
	}
	return nil
}

// DeletePackages deletes the packages created before before that no operation references.
func (s *Store) DeletePackages(ctx context.Context, before time.Time) ([]string, error) {
	var unused []string
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := s.txQuery(ctx, tx, `DELETE FROM packages WHERE created_at < ? AND NOT EXISTS (
			SELECT 1 FROM operation_packages r WHERE r.name = packages.name AND r.version = packages.version)
			RETURNING sha256`, nanos(before))
		if err != nil {
			return err
		}
		deleted, err := scanAll(rows, nil, func(r scanner) (string, error) {
			var sha string
			return sha, r.Scan(&sha)
		})
		if err != nil {
			return err
		}
		unused = unused[:0]
		for _, sha := range deleted {
			var n int
			if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM packages WHERE sha256 = ?`, sha).Scan(&n); err != nil {
				return err
			}
			if n == 0 && !slices.Contains(unused, sha) {
				unused = append(unused, sha)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deleting packages created before %s: %w", before.Format(time.RFC3339), err)
	}
	return unused, nil
}
