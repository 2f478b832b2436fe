package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// Backup copies the database at from, which servers may be using meanwhile, into the new file to. The copy is
// the database as one read transaction sees it (VACUUM INTO): a consistent snapshot, taken beside a live
// server, whose writer it does not block (WAL mode).
//
// The copy holds the sensitive values of queued operations, in clear (the database seals them under keys kept
// beside it, which the copy does not need: Open seals them again under keys of its own), so it is created
// readable by its owner only (0600). It is never written over an existing file: an existing to is an error wrapping fs.ErrExist. A
// missing or empty from is an error wrapping fs.ErrNotExist (and from is not created). The copy is written to
// a hidden temporary file beside to, synced, and only then linked to its name, so a file named to is always
// a whole copy. It is an ordinary database that Open opens directly: compact (no free pages, so nothing an
// erased value left behind), with the same incremental auto-vacuum, in rollback-journal mode until Open sets
// WAL.
//
// Why VACUUM INTO rather than SQLite's online backup API (which modernc.org/sqlite exposes only on its
// driver connection): it is one SQL statement through database/sql, it copies only live rows into fresh
// pages, and it holds one read transaction for the whole copy, as the backup API does when it copies in one
// step (copied in several steps, it restarts whenever a server writes). Its cost is CPU: it rebuilds every
// table and index instead of copying pages.
func Backup(ctx context.Context, from, to string) error {
	if strings.ContainsAny(from, "?#") {
		return fmt.Errorf("database path %q contains '?' or '#'; rename the file", from)
	}
	info, err := os.Stat(from)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kindError{fmt.Sprintf("no database at %s", from), fs.ErrNotExist}
	case err != nil:
		return fmt.Errorf("reading the database %s: %w", from, err)
	case !info.Mode().IsRegular() || info.Size() == 0:
		return kindError{fmt.Sprintf("no database at %s (it is empty or not a regular file)", from), fs.ErrNotExist}
	}
	exists := func() error {
		return kindError{fmt.Sprintf("%s already exists, and a backup never overwrites a file", to), fs.ErrExist}
	}
	if _, err := os.Lstat(to); err == nil {
		return exists()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking %s: %w", to, err)
	}
	abs, err := filepath.Abs(to) // an absolute name is never read as a "file:" URI
	if err != nil {
		return fmt.Errorf("resolving %s: %w", to, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-*") // mode 0600
	if err != nil {
		return fmt.Errorf("creating the copy beside %s: %w", to, err)
	}
	partial := tmp.Name()
	defer os.Remove(partial)
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("creating the copy %s: %w", partial, err)
	}
	if err := copyOpened(ctx, from, partial); err != nil {
		return err
	}
	if err := syncPath(partial); err != nil {
		return fmt.Errorf("syncing the copy %s: %w", partial, err)
	}
	if err := os.Link(partial, abs); err != nil { // unlike a rename, never replaces a file created meanwhile
		if errors.Is(err, fs.ErrExist) {
			return exists()
		}
		return fmt.Errorf("naming the copy %s: %w", to, err)
	}
	if err := syncPath(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("syncing the directory of %s: %w", to, err)
	}
	return nil
}

// copyOpened writes the database at from into the empty file to (vacuumInto) and opens its sealed values
// there with the keys of from (openCopy). A key can be added to and dropped from the key file while the copy
// is made: the keys are read before and after it, and a copy that needs a key neither read holds (the key
// came and went in between, which takes a rotation between the first read and the copy's snapshot) is made
// again, up to three times.
func copyOpened(ctx context.Context, from, to string) error {
	var err error
	for range 3 {
		var before, after map[uint32]*sealKey
		if before, err = readKeys(KeysPath(from)); err != nil {
			return err
		}
		if err = os.Truncate(to, 0); err != nil {
			return fmt.Errorf("emptying the copy %s: %w", to, err)
		}
		if err = vacuumInto(ctx, from, to); err != nil {
			return err
		}
		if after, err = readKeys(KeysPath(from)); err != nil {
			return err
		}
		maps.Copy(before, after)
		if err = openCopy(ctx, to, before); !errors.Is(err, errKeyGone) {
			return err
		}
	}
	return fmt.Errorf("copying the database %s: %w", from, err)
}

var errKeyGone = errors.New("a sealing key left the key file during the copy")

// openCopy replaces the sealed values of the database at path (a copy of a database in rollback-journal mode)
// with their clear values, opened with keys.
func openCopy(ctx context.Context, path string, keys map[uint32]*sealKey) error {
	db, err := sql.Open("sqlite", sqlitedsn.Backup(path)+"&_pragma=secure_delete(1)")
	if err != nil {
		return fmt.Errorf("opening the copy %s: %w", path, err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('operations') WHERE name = 'secrets_kid'`).Scan(&n); err != nil || n == 0 {
		return err // a database from before sealed values holds them in clear
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("opening the values of the copy %s: %w", path, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit it does nothing
	lookup := func(id uint32) *sealKey { return keys[id] }
	for _, c := range sealedCols {
		rows, err := tx.QueryContext(ctx, sealedSQL(c.col, c.kid, `IS NOT NULL`))
		if err != nil {
			return fmt.Errorf("reading the sealed values of the copy: %w", err)
		}
		vals, err := scanAll(rows, nil, scanSealed)
		if err != nil {
			return fmt.Errorf("reading the sealed values of the copy: %w", err)
		}
		for _, v := range vals {
			plain, err := openSealed(v.v, c.ad, lookup)
			if err != nil {
				return fmt.Errorf("%w: %w", errKeyGone, err)
			}
			var stored any = plain
			if c.col == "secrets" {
				stored = string(plain) // TEXT, as a database from before sealed values holds it
			}
			if _, err := tx.ExecContext(ctx, `UPDATE operations SET `+c.col+` = ?, `+c.kid+` = NULL WHERE seq = ?`, stored, v.seq); err != nil {
				return fmt.Errorf("writing the values of the copy: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ended_keys`); err != nil {
		return fmt.Errorf("writing the copy: %w", err)
	}
	return tx.Commit()
}

// vacuumInto writes the database at from into the empty file to.
func vacuumInto(ctx context.Context, from, to string) error {
	db, err := sql.Open("sqlite", sqlitedsn.Backup(from))
	if err != nil {
		return fmt.Errorf("opening the database %s: %w", from, err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return fmt.Errorf("reading the database %s: %w", from, err)
	}
	if n == 0 {
		return fmt.Errorf("%s is not an octo-worker database (it has no schema_migrations table)", from)
	}
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, to); err != nil {
		return fmt.Errorf("copying the database %s: %w", from, err)
	}
	return nil
}

// kindError is a message that errors.Is matches to kind (fs.ErrExist, fs.ErrNotExist) without repeating it.
type kindError struct {
	msg  string
	kind error
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }

// syncPath flushes the file or directory at path to stable storage.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
