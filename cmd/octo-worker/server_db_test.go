package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// TestMain stops the PostgreSQL that pgtest.URL started.
func TestMain(m *testing.M) { pgtest.Main(m) }

// TestServerDBChoosesTheDriver: --db with a postgres:// or postgresql:// URL opens PostgreSQL, whose packages
// default to a directory not derived from the URL; anything else is a SQLite file, with its packages beside
// it; a bad URL or an unreachable server fails with an error naming --db and saying what to check.
func TestServerDBChoosesTheDriver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "d.db")
	pgURL := pgtest.URL(t)
	for _, db := range []string{file, pgURL, strings.Replace(pgURL, "postgres://", "postgresql://", 1)} {
		st, dir, err := openStore(ctx, db, quietLog())
		if err != nil {
			t.Fatalf("--db %s: %v", db, err)
		}
		switch st.(type) {
		case *sqlite.Store:
			if db != file || dir != file+".packages" {
				t.Errorf("--db %s opened SQLite with packages in %s", db, dir)
			}
		case *postgres.Store:
			if db == file || dir != urlPackagesDir {
				t.Errorf("--db %s opened PostgreSQL with packages in %s, want %s", db, dir, urlPackagesDir)
			}
		default:
			t.Errorf("--db %s opened a %T", db, st)
		}
		_ = st.Close()
	}
	for _, c := range []struct{ db, want string }{
		{"postgres://u@127.0.0.1:99999/x", "want postgres://USER:PASSWORD@HOST:PORT/DATABASE"},
		{"postgres://u@127.0.0.1:1/x", "is the server running and reachable"},
	} {
		_, _, err := openStore(ctx, c.db, quietLog())
		if err == nil || !strings.HasPrefix(err.Error(), "--db: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--db %s: %v; want an error naming --db and saying %q", c.db, err, c.want)
		}
	}
}

// TestServerOnPostgres: `octo-worker server --db postgres://...` serves from that database: a pool created
// through the server is in it.
func TestServerOnPostgres(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	url, token, _ := startServerOn(t, db, "--packages-dir", t.TempDir())
	admin, err := client.New(client.Config{Server: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreatePool(t.Context(), "shared", ""); err != nil {
		t.Fatal(err)
	}
	st, err := postgres.Open(t.Context(), db, postgres.WithLogger(quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p, err := st.Pool(t.Context(), "shared"); err != nil || p.Name != "shared" {
		t.Errorf("pool in the database: %v, %v; want the one created through the server", p, err)
	}
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
