package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"database/sql"

	"go.uber.org/goleak"

	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"

	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/storetest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "dispatch.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the store's conformance suite against a real SQLite file.
func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	if err := s.SetSetting(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("database file mode %o, want 600 (it holds sensitive values)", perm)
	}
	s, err = Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s.Close()
	if v, err := s.Setting(t.Context(), "k"); err != nil || v != "v" {
		t.Errorf("after reopening Setting = %q, %v", v, err)
	}
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(entries) {
		t.Errorf("schema_migrations has %d rows, %v; want each of the %d migrations applied once", n, err, len(entries))
	}
	var mode string
	if err := s.r.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	if _, err := s.w.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_, err := Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "schema version 999") {
		t.Fatalf("Open of a newer database: error = %v, want one naming schema version 999", err)
	}
}

func TestOpenRefusesBadPaths(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", "x.db?mode=ro", filepath.Join(t.TempDir(), "missing-dir", "x.db")} {
		if _, err := Open(t.Context(), path); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

// TestClaimUsesQueueIndex guards the claim's cost: the pick must search the partial queue index, not scan
// the operations table, or the queue slows down as history grows.
func TestClaimUsesQueueIndex(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	joined := queryPlan(t, s, claimSQL, sql.Named("worker", "w"), sql.Named("lease", "l"), sql.Named("request", nil),
		sql.Named("expires", 0), sql.Named("now", 0), sql.Named("since", 0), sql.Named("pools", `["p", "q"]`), sql.Named("caps", `[]`),
		sql.Named("podtoken", nil), sql.Named("sealkey", nil), sql.Named("sealkid", nil), sql.Named("loglimit", 0), sql.Named("profiles", `["gpu"]`))
	if !strings.Contains(joined, "SEARCH o USING INDEX operations_queue") || !strings.Contains(joined, "USING COVERING INDEX operations_targeted") ||
		!strings.Contains(joined, "SEARCH l USING INDEX operations_worker") || strings.Contains(joined, "TEMP B-TREE") {
		t.Errorf("claim plan does not use the queue index:\n%s", joined)
	}
}

// queryPlan returns SQLite's plan for query, one step a line (EXPLAIN QUERY PLAN's detail column).
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.w.Query(`EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// TestGroupCommitIsolatesFailures: writes committed together keep their own outcomes: a write that fails
// (a duplicate pool) rolls back alone, a write whose context ended is skipped, the rest commit.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := t.Context()
	if err := s.CreatePool(ctx, api.Pool{Name: "taken", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("pool-%d", i)
			c := ctx
			switch i % 10 {
			case 3:
				name = "taken"
			case 7:
				c = cancelled
			}
			errs[i] = s.CreatePool(c, api.Pool{Name: name, CreatedAt: time.Now()})
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, store.ErrExists) {
				t.Errorf("write %d (duplicate): %v, want ErrExists", i, err)
			}
		case 7:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("write %d (cancelled): %v, want context.Canceled", i, err)
			}
		default:
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}
	}
	pools, err := s.ListPools(ctx)
	if err != nil || len(pools) != 1+n-2*n/10 {
		t.Errorf("%d pools stored, %v; want %d", len(pools), err, 1+n-2*n/10)
	}
}

// TestMain checks that Close stops the writer goroutine (and nothing else is left running).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A database that got a higher-numbered migration before a lower one (two branches each added one) still gets
// the lower one when it opens: migrations are applied by what is missing, not by the highest version.
func TestMigrateAppliesAMissingLowerVersion(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	s.Close()
	// Take migration 0003 back out, as if this database had been migrated by a build that lacked it.
	db, err := sql.Open("sqlite", sqlitedsn.DSN(path, true))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP INDEX operations_targeted`,
		`DROP INDEX operations_queue`,
		`CREATE INDEX operations_queue ON operations (pool, seq) WHERE state = 'queued' AND ready = 1`,
		`ALTER TABLE operations DROP COLUMN target_worker`,
		`ALTER TABLE workers DROP COLUMN checks`,
		`ALTER TABLE workers DROP COLUMN last_check`,
		`DELETE FROM schema_migrations WHERE version = 3`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err = Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM pragma_table_info('operations') WHERE name = 'target_worker'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Error("migration 0003 was not applied to a database that already had 0004")
	}
}

// openFile opens a store in a new file of the test's temp dir and returns it with the file's path, for tests
// that close, change and reopen the file themselves.
func openFile(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dispatch.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// TestSealedValuesUseKeyIndexes guards the cost of a retirement and of Open: finding the live values under a
// key, the keys of live values and the values held in clear search the partial key indexes, not the
// operations table, which grows with history.
func TestSealedValuesUseKeyIndexes(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	for _, c := range sealedCols {
		if plan := queryPlan(t, s, sealedSQL(c.col, c.kid, "= ?"), 1); !strings.Contains(plan, "USING INDEX operations_"+c.kid) {
			t.Errorf("re-sealing %s does not search its key index:\n%s", c.ad, plan)
		}
	}
	for _, q := range []string{liveKidsSQL, inClearSQL} {
		if plan := queryPlan(t, s, q); strings.Contains(plan, "SCAN operations") {
			t.Errorf("%s scans the operations table:\n%s", q, plan)
		}
	}
}
