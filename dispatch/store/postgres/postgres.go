// Package postgres is the PostgreSQL driver of the dispatch store, for several dispatch servers sharing one
// database. It talks to PostgreSQL through a pgx connection pool (github.com/jackc/pgx/v5); its migrations
// are embedded and run once, under an advisory lock, whichever servers start at the same time.
//
// Where the SQLite driver leans on its single writer (ordering, check-then-write), this one takes row locks
// in the statement or transaction that decides: each such place says why it is safe with concurrent servers.
// Times are BIGINT Unix nanoseconds (UTC) and lists JSON text, as in SQLite.
//
// Log positions count per operation and are given out under the operation's row lock (logs.go), so a
// follower never misses a line committed behind its cursor. Sensitive values of an ended operation leave its
// rows but not every byte on disk: erase.go says what the driver does and what stays.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool *pgxpool.Pool
	log  *logrus.Entry
	// scrub vacuums operations after ends erased sensitive values (erase.go).
	scrub scrubber
}

var _ store.Store = (*Store)(nil)

// connectTimeout bounds a connection attempt when the URL sets no connect_timeout.
const connectTimeout = 10 * time.Second

// defaultMaxConns is the pool's size when the URL sets no pool_max_conns. pgxpool's own default, the client's
// core count and at least 4, starved a server of thousands of idle workers: every heartbeat, claim and log
// batch is a short statement, and with 4 connections they queued in the pool while the database had cores to
// spare. 16 lets the database run as many at once as a database host of a few cores can use, and leaves, in
// PostgreSQL's default max_connections of 100, room for five servers (each also holds its wake-up listener's
// connection) and for administration.
const defaultMaxConns = 16

// Option changes how Open opens a store.
type Option func(*Store)

// WithLogger sets the logger of what the store does by itself (migrations). The default is logrus's standard
// logger.
func WithLogger(log *logrus.Logger) Option {
	return func(s *Store) { s.log = log.WithField("component", "dispatch-store") }
}

// Open connects to the database at url (a postgres:// or postgresql:// URL, or a libpq keyword/value string)
// and migrates it to the schema this binary knows.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing the PostgreSQL URL (want postgres://USER:PASSWORD@HOST:PORT/DATABASE): %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout // else an unreachable host hangs until TCP gives up
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	s := &Store{}
	WithLogger(logrus.StandardLogger())(s)
	for _, o := range opts {
		o(s)
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	s.log = s.log.WithField("db", where)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL at %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s (is the server running and reachable, and are the user, password and database right?): %w", where, err)
	}
	s.pool = pool
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrating the database at %s: %w", where, err)
	}
	return s, nil
}

// Close closes the connection pool (after the connections in use are released).
func (s *Store) Close() error {
	s.closeScrubber()
	s.pool.Close()
	return nil
}

// tx runs fn in a transaction and commits it; fn's error rolls it back. A transaction PostgreSQL aborted to
// break a deadlock runs again (retry): fn must set what it returns afresh each time it runs.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.retry(ctx, func() error { return pgx.BeginFunc(ctx, s.pool, fn) })
}

// txAttempts is how many times retry runs a transaction that keeps being chosen as a deadlock's victim.
const txAttempts = 3

// retry runs a transaction, run, again when PostgreSQL aborted it to break a deadlock (40P01) or as a
// serialization failure (40001, which READ COMMITTED raises only in corner cases): nothing of it was
// committed, and the next attempt takes its locks afresh. The statements lock rows in one order (a worker's
// row before its operations, several operations in seq order, a deployment's steps in step order), so this is
// the net under that rule, not the rule.
func (s *Store) retry(ctx context.Context, run func() error) error {
	for attempt := 1; ; attempt++ {
		err := run()
		var pe *pgconn.PgError
		if err == nil || attempt == txAttempts || !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "40001") ||
			ctx.Err() != nil {
			return err
		}
		s.log.WithError(err).WithField("attempt", attempt).Warn("running a transaction again that PostgreSQL aborted")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(rand.N(10*attempt)+1) * time.Millisecond):
		}
	}
}

// isUniqueViolation reports whether err is a unique (or primary key) constraint failure.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// ---- value conversions ----

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullNanos(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func timePtr(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := fromNanos(*n)
	return &t
}

// nonNil makes a nil list encode as [] in JSON columns.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// nullString is NULL for "".
func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
