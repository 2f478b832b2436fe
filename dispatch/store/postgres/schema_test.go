package postgres

import (
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// sqliteOnly are the tables and columns of SQLite's sealed values (sqlite/keyring.go): PostgreSQL erases ended
// values from its own files (erase.go) and keeps them in clear.
var sqliteOnly = map[string]bool{"ended_keys": true, "operations.secrets_kid": true, "operations.sealing_kid": true}

// TestSchemaMatchesSQLite: both drivers' migrations reach the same tables with the same columns (types
// differ by dialect), so a schema change made to one driver and not the other fails here.
func TestSchemaMatchesSQLite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "dispatch.db")
	lite, err := sqlite.Open(ctx, path, sqlite.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := lite.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", sqlitedsn.DSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		if !sqliteOnly[table] && !sqliteOnly[table+"."+col] {
			want[table] = append(want[table], col)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	pg := openTemp(t)
	prow, err := pg.pool.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	var table, col string
	for prow.Next() {
		if err := prow.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		got[table] = append(got[table], col)
	}
	if err := prow.Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []map[string][]string{want, got} {
		for _, cols := range m {
			slices.Sort(cols)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tables and columns differ (-sqlite +postgres):\n%s", diff)
	}
}
