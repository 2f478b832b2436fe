// Package storebench opens every store driver the same way for benchmarks that put their figures side by
// side in one run: a fresh, empty store of each driver (SQLite in a temp dir; PostgreSQL from pgtest), and
// each driver's raw rate (one-INSERT transactions per second on the same database engine and settings), the
// baseline the store's own figures are divided by. Its benchmarks (bench_test.go) measure the store's hot
// statements and the writes each operation costs; scripts/bench-dispatch.sh runs them.
package storebench

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the raw baseline opens SQLite through database/sql, as the driver does

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// Driver is one store driver, for a benchmark's sub-benchmark db=<Name>.
type Driver struct {
	Name string
	// Open returns a fresh, empty store of this driver, closed (and its server stopped) when tb ends.
	Open func(tb testing.TB) *DB
}

// DB is a store a Driver opened, with what the benchmarks measure beside it.
type DB struct {
	Store store.Store
	// Where is the SQLite file's path or the PostgreSQL database's URL.
	Where string
	// RawTxRate measures n one-INSERT transactions per second on a fresh database beside Store (same engine,
	// server and settings): the machine's raw rate, measured in the same run as the figure it divides.
	RawTxRate func(n int) float64
	// Reopen closes Store and opens the database again into Store, so that what the closed store wrote is
	// all counted (SQLite's close checkpoints the WAL; PostgreSQL's backends report their statistics as they
	// exit).
	Reopen func()
	// Counters reads what the database wrote so far (see Counters); call it after Reopen.
	Counters func() Counters
}

// Counters are what a database wrote, cumulative. SQLite, in this process: Bytes and Calls handed to write(2)
// (/proc/self/io wchar and syscw: the WAL's frames and the checkpoints' pages, nothing else writes during a
// benchmark). PostgreSQL, of the benchmark's database: Bytes of WAL (pg_current_wal_lsn), Rows inserted,
// updated and deleted and Commits (pg_stat_database).
type Counters struct {
	Bytes, Calls, Rows, Commits float64
}

// Drivers lists the drivers, SQLite first.
func Drivers() []Driver {
	return []Driver{{Name: "sqlite", Open: openSQLite}, {Name: "postgres", Open: openPostgres}}
}

// Run runs f as sub-benchmark db=<name> of b for every driver.
func Run(b *testing.B, f func(b *testing.B, d Driver)) {
	for _, d := range Drivers() {
		b.Run("db="+d.Name, func(b *testing.B) { f(b, d) })
	}
}

func openSQLite(tb testing.TB) *DB {
	path := filepath.Join(tb.TempDir(), "dispatch.db")
	st, err := sqlite.Open(tb.Context(), path)
	if err != nil {
		tb.Fatal(err)
	}
	db := &DB{Store: st, Where: path, RawTxRate: func(n int) float64 { return rawSQLiteRate(tb, n) }, Counters: func() Counters {
		io := procIO(tb)
		return Counters{Bytes: io["wchar"], Calls: io["syscw"]}
	}}
	tb.Cleanup(func() { _ = db.Store.Close() })
	db.Reopen = func() {
		if err := db.Store.Close(); err != nil {
			tb.Fatal(err)
		}
		if db.Store, err = sqlite.Open(tb.Context(), path); err != nil {
			tb.Fatal(err)
		}
	}
	return db
}

// procIO reads /proc/self/io.
func procIO(tb testing.TB) map[string]float64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(raw)) {
		k, v, _ := strings.Cut(line, ":")
		out[k], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
	}
	return out
}

// rawSQLiteRate is single-INSERT transactions per second on a fresh file with the store writer's own DSN.
func rawSQLiteRate(tb testing.TB, n int) float64 {
	db, err := sql.Open("sqlite", sqlitedsn.DSN(filepath.Join(tb.TempDir(), "raw.db"), true))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return rawRate(tb, db, n, `CREATE TABLE raw (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`, `INSERT INTO raw (v) VALUES (?)`)
}

// rawRate creates a table with create and runs n transactions of one insert each.
func rawRate(tb testing.TB, db *sql.DB, n int, create, insert string) float64 {
	if _, err := db.Exec(create); err != nil {
		tb.Fatal(err)
	}
	ins, err := db.Prepare(insert)
	if err != nil {
		tb.Fatal(err)
	}
	defer ins.Close()
	start := time.Now()
	for i := range n {
		tx, err := db.Begin()
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := tx.Stmt(ins).Exec(fmt.Sprintf("row %d", i)); err != nil {
			tb.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
