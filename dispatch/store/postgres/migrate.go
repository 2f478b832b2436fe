package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the key of the advisory lock that migrations run under ("octo-mig" in ASCII), so that
// servers starting together migrate one after the other: the first applies what is missing, the others find
// it applied.
const migrationLock int64 = 0x6f63746f2d6d6967

// migrate applies the embedded migrations the database lacks, in order, in one transaction that holds the
// migration lock (PostgreSQL's DDL is transactional: a failed migration leaves nothing behind). Every
// migration not applied yet is applied, not only those above the highest applied (see the SQLite driver).
func (s *Store) migrate(ctx context.Context) error {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("reading embedded migrations: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("reading the schema version: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("reading the schema version: %w", err)
		}
		applied := map[int64]bool{}
		var current, latest int64
		for _, v := range versions {
			applied[v], current = true, max(current, v)
		}
		for _, e := range entries {
			version, err := strconv.ParseInt(strings.SplitN(e.Name(), "_", 2)[0], 10, 64)
			if err != nil {
				return fmt.Errorf("migration %s: name must start with a number: %w", e.Name(), err)
			}
			latest = version
			if applied[version] {
				continue
			}
			body, err := migrations.ReadFile("migrations/" + e.Name())
			if err != nil {
				return fmt.Errorf("reading migration %s: %w", e.Name(), err)
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("applying migration %s: %w", e.Name(), err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				version, e.Name(), time.Now().UnixNano()); err != nil {
				return fmt.Errorf("recording migration %s: %w", e.Name(), err)
			}
			s.log.WithField("migration", e.Name()).Info("applied a database migration")
		}
		if current > latest {
			return fmt.Errorf("the database has schema version %d but this octo-worker knows only up to %d: run a newer octo-worker", current, latest)
		}
		return nil
	})
}
