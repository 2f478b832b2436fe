package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// urlPackagesDir is --packages-dir's default with a PostgreSQL --db: a database URL names no place on this
// machine to derive it from.
const urlPackagesDir = "octo-worker.packages"

// isDatabaseURL says whether --db names a PostgreSQL server rather than a SQLite file.
func isDatabaseURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// openStore opens the store --db names: PostgreSQL for a postgres:// or postgresql:// URL, else the SQLite
// file at that path. It also returns --packages-dir's default for it: DB.packages beside a SQLite file,
// urlPackagesDir in the working directory for a URL. Its errors name --db.
func openStore(ctx context.Context, db string, log *logrus.Logger) (store.Store, string, error) {
	if isDatabaseURL(db) {
		st, err := postgres.Open(ctx, db, postgres.WithLogger(log))
		if err != nil {
			return nil, "", fmt.Errorf("--db: %w", err)
		}
		return st, urlPackagesDir, nil
	}
	st, err := sqlite.Open(ctx, db, sqlite.WithLogger(log))
	if err != nil {
		return nil, "", fmt.Errorf("--db: %w", err)
	}
	return st, db + ".packages", nil
}
