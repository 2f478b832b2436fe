package postgres

import (
	"strings"
	"sync"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// TestMigrateOnceConcurrently: eight servers opening one new database at once migrate it once: every Open
// succeeds and each migration is recorded once. Without the advisory lock they race to create the same
// tables and all but one fail.
func TestMigrateOnceConcurrently(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	const n = 8
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var rows, distinct int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != len(entries) || distinct != len(entries) {
		t.Errorf("schema_migrations has %d rows (%d versions), want each of the %d migrations once", rows, distinct, len(entries))
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(t.Context(), url)
	if err == nil || !strings.Contains(err.Error(), "schema version 999") {
		t.Fatalf("Open of a newer database: error = %v, want one naming schema version 999", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ url, want string }{
		{"postgres://u@127.0.0.1:99999/x", "parsing the PostgreSQL URL"},
		{"postgres://u@127.0.0.1:1/x?connect_timeout=5", "is the server running and reachable"},
	} {
		if _, err := Open(t.Context(), c.url); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want an error saying %q", c.url, err, c.want)
		}
	}
}
