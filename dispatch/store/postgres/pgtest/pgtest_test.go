package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// TestStartCreateStop starts a server of its own, creates a database on it, and stops it: afterwards nothing
// listens on its port and its process is gone.
func TestStartCreateStop(t *testing.T) {
	if _, err := BinDir(); errors.Is(err, ErrNoBinaries) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	// A long directory: the socket must still fit.
	dir := filepath.Join(t.TempDir(), "a-directory-name-long-enough-to-push-the-socket-path-past-its-limit")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = s.Stop()
		}
	})
	ctx := t.Context()
	u, err := s.CreateDatabase(ctx, "made_here")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	var fsync string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_setting('fsync')`).Scan(&db, &fsync); err != nil {
		t.Fatal(err)
	}
	if db != "made_here" || fsync != "off" {
		t.Errorf("connected to %q with fsync %s, want made_here with fsync off", db, fsync)
	}
	_ = conn.Close(ctx)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := s.cmd.Process.Signal(syscall.Signal(0)); err == nil {
		t.Error("the server process still exists after Stop")
	}
	if _, err := pgx.Connect(context.Background(), u); err == nil {
		t.Error("connected after Stop")
	}
}

// TestURLGivesEmptyDatabases: two calls give two different databases, each without tables.
func TestURLGivesEmptyDatabases(t *testing.T) {
	ctx := t.Context()
	seen := map[string]bool{}
	for range 2 {
		conn, err := pgx.Connect(ctx, URL(t))
		if err != nil {
			t.Fatal(err)
		}
		var db string
		var tables int
		if err := conn.QueryRow(ctx, `SELECT current_database(), (SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public')`).Scan(&db, &tables); err != nil {
			t.Fatal(err)
		}
		if seen[db] || tables != 0 {
			t.Errorf("database %s (seen before: %v) has %d tables, want a new empty one", db, seen[db], tables)
		}
		seen[db] = true
		if _, err := conn.Exec(ctx, `CREATE TABLE x (a int)`); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(ctx)
	}
}
