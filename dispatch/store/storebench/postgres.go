package storebench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the raw baseline goes through database/sql, like SQLite's
	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/store/postgres"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// openPostgres opens a store on a fresh database. With $OCTO_TEST_POSTGRES it is created there (pgtest.URL);
// else on a private server started for this store in tb's temp dir and stopped when tb ends, so a package
// needs no pgtest.Main in its TestMain (dispatch/server's checks for goroutines left running) and every
// benchmark starts from a cold, idle server. The pgtest server is tuned for tests (fsync, full page writes and
// synchronous commit off), so its figures are what PostgreSQL costs in CPU and WAL, not in disk flushes.
func openPostgres(tb testing.TB) *DB {
	tb.Helper()
	ctx := tb.Context()
	var url string
	newDatabase := func() string { return pgtest.URL(tb) }
	if os.Getenv("OCTO_TEST_POSTGRES") != "" {
		url = pgtest.URL(tb)
	} else {
		if _, err := pgtest.BinDir(); err != nil {
			pgtest.URL(tb) // skips, or fails under $CI, saying how to install PostgreSQL
		}
		srv, err := pgtest.Start(tb.TempDir())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			if err := srv.Stop(); err != nil {
				tb.Error(err)
			}
		})
		n := 0
		newDatabase = func() string {
			n++
			u, err := srv.CreateDatabase(context.WithoutCancel(ctx), fmt.Sprintf("bench%d", n))
			if err != nil {
				tb.Fatal(err)
			}
			return u
		}
		url = newDatabase()
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	open := func() *postgres.Store {
		st, err := postgres.Open(ctx, url, postgres.WithLogger(quiet))
		if err != nil {
			tb.Fatal(err)
		}
		return st
	}
	db := &DB{Store: open(), Where: url, RawTxRate: func(n int) float64 { return rawPostgresRate(tb, newDatabase(), n) },
		Counters: func() Counters { return pgCounters(tb, url) }}
	tb.Cleanup(func() { _ = db.Store.Close() })
	db.Reopen = func() {
		_ = db.Store.Close()
		waitBackendsGone(tb, url)
		db.Store = open()
	}
	return db
}

// pgCounters reads the WAL position of the server and the row and commit counts of url's database.
func pgCounters(tb testing.TB, url string) Counters {
	conn, err := pgx.Connect(tb.Context(), url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(tb.Context()))
	var c Counters
	if err := conn.QueryRow(tb.Context(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8,
		(tup_inserted + tup_updated + tup_deleted)::float8, xact_commit::float8
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&c.Bytes, &c.Rows, &c.Commits); err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitBackendsGone waits until no other session is connected to url's database: a backend reports its
// statistics before it leaves pg_stat_activity.
func waitBackendsGone(tb testing.TB, url string) {
	conn, err := pgx.Connect(tb.Context(), url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(tb.Context()))
	for {
		var n int
		if err := conn.QueryRow(tb.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			tb.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawPostgresRate is single-INSERT transactions per second on the database at url, over one connection.
func rawPostgresRate(tb testing.TB, url string, n int) float64 {
	db, err := sql.Open("pgx", url)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(time.Minute)
	return rawRate(tb, db, n, `CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)`, `INSERT INTO raw (v) VALUES ($1)`)
}
