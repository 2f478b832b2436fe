package pkgfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// TestBind: the first start ties a directory and a database together; later starts pass with that directory
// and are refused, saying what to do, with an empty one or another database's.
func TestBind(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	shared := openDir(t)
	if err := shared.Bind(ctx, db); err != nil {
		t.Fatalf("first start: %v", err)
	}
	if err := shared.Bind(ctx, db); err != nil {
		t.Fatalf("second start with the same directory: %v", err)
	}
	id, err := db.Setting(ctx, IDSetting)
	if b, _ := os.ReadFile(filepath.Join(shared.Root(), IDFile)); err != nil || strings.TrimSpace(string(b)) != id {
		t.Fatalf("the database names %q (%v), the directory %q", id, err, b)
	}

	// A server of the same database given a directory of its own.
	own := openDir(t)
	err = own.Bind(ctx, db)
	if err == nil || !strings.Contains(err.Error(), "servers sharing a database must share one packages directory") ||
		!strings.Contains(err.Error(), id) {
		t.Fatalf("Bind of a fresh directory to a bound database = %v; want a refusal naming the id", err)
	}
	if _, statErr := os.Stat(filepath.Join(own.Root(), IDFile)); statErr == nil {
		t.Error("the refused directory was given an id")
	}
	// Restored without its file: writing the id back, as the error says, makes it the database's again.
	if err := os.WriteFile(filepath.Join(own.Root(), IDFile), []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := own.Bind(ctx, db); err != nil {
		t.Fatalf("after writing the id back: %v", err)
	}

	// Another database's directory.
	other := openDB(t)
	if err := shared.Bind(ctx, other); err != nil { // a new database beside an old directory adopts it
		t.Fatalf("a new database beside a bound directory: %v", err)
	}
	third := openDir(t)
	if err := third.Bind(ctx, openDB(t)); err != nil {
		t.Fatal(err)
	}
	err = third.Bind(ctx, db)
	if err == nil || !strings.Contains(err.Error(), "holds another database's packages") {
		t.Fatalf("Bind of another database's directory = %v; want a refusal", err)
	}
}

func openDB(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openDir(t *testing.T) *Dir {
	t.Helper()
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
