// Package sqlite is the SQLite driver of the dispatch store: one database file in WAL mode, a single writer
// connection (every change is one short IMMEDIATE transaction, so writers never fail on a busy lock) beside a
// pool of readers, and migrations embedded in the binary. It uses modernc.org/sqlite, a pure-Go SQLite, so
// the binary stays static.
//
// On disk (disk.go): the files are private to their owner, sensitive values are sealed under keys kept in a
// file beside the database and retired soon after their operation ends (keyring.go), the writer zeroes what
// it deletes (secure_delete), and freed pages go back to the file system (incremental auto-vacuum).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
	"github.com/octo-worker/octo-worker/dispatch/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Store is the SQLite implementation of store.Store.
type Store struct {
	w *sql.DB // the single writer
	r *sql.DB // readers (WAL lets them run beside the writer)

	writes  chan writeReq // to the writer goroutine
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer has returned
	log     *logrus.Entry

	c            *sql.DB                  // the checkpointer's connection (checkpoint.go)
	cpMu         sync.Mutex               // held by a checkpoint or a truncation of the WAL
	committed    atomic.Bool              // set by the writer after a commit, cleared by the checkpointer
	cpStopped    chan struct{}            // closed when the checkpointer has returned
	checkpointed func(frames, copied int) // when set (tests), called after each checkpoint with its counts

	keys *keyring // the keys sealed values are sealed under (keyring.go)
	lock *os.File // held while the store is open (lockDatabase)

	// ended and shrink are set, by the writer goroutine only, when a write of the group being committed erased
	// sensitive values (retireSoon) or deleted history (truncateSoon).
	ended, shrink bool
	// truncated, when set (tests), is called after each WAL truncation with whether it completed.
	truncated func(done bool)

	stmtMu  sync.Mutex
	wStmts  map[string]*sql.Stmt
	rStmts  map[string]*sql.Stmt
	pending []string // writer statements to prepare once the connection is free
}

var _ store.Store = (*Store)(nil)

// Option changes how Open opens a store.
type Option func(*Store)

// WithLogger sets the logger of what the store changes on disk by itself (file modes made private, a one-time
// VACUUM) and of WAL truncations that fail. The default is logrus's standard logger.
func WithLogger(log *logrus.Logger) Option {
	return func(s *Store) { s.log = log.WithField("component", "dispatch-store") }
}

// Open opens (creating it if needed, readable by its owner only) the database at path and migrates it to the
// schema this binary knows. An existing database, WAL or shared-memory file readable by others is made 0600
// (with a warning), and an existing database without incremental auto-vacuum is converted once (VACUUM).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening the database: no path given (use --db FILE)")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("opening the database: path %q contains '?' or '#'; choose a plain file name", path)
	}
	// The file holds sensitive values of queued operations: create it private.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	_ = f.Close()
	s := &Store{wStmts: map[string]*sql.Stmt{}, rStmts: map[string]*sql.Stmt{},
		writes: make(chan writeReq), stop: make(chan struct{}), stopped: make(chan struct{}), cpStopped: make(chan struct{})}
	WithLogger(logrus.StandardLogger())(s)
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.WithField("db", path)
	if err := makePrivate(path, s.log); err != nil {
		return nil, err
	}
	if s.lock, err = lockDatabase(path); err != nil {
		return nil, err
	}
	opened := false
	defer func() {
		if !opened {
			_ = s.lock.Close()
		}
	}()

	w, err := sql.Open("sqlite", sqlitedsn.DSN(path, true))
	if err != nil {
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w = w
	if err := s.autoVacuum(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	if err := s.openCheckpointer(ctx, path); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	go s.writer(s.stop)
	go s.checkpointer(s.stop)
	if err := s.migrate(ctx); err != nil {
		s.stopWriter()
		_ = errors.Join(s.c.Close(), w.Close())
		return nil, fmt.Errorf("migrating the database %s: %w", path, err)
	}
	sealed, err := s.openKeys(ctx, path)
	if err != nil {
		s.stopWriter()
		_ = errors.Join(s.c.Close(), w.Close())
		return nil, fmt.Errorf("opening the database %s: %w", path, err)
	}
	if sealed {
		s.truncateWAL() // the values sealed just now are still in clear in the WAL
	}
	r, err := sql.Open("sqlite", sqlitedsn.DSN(path, false))
	if err != nil {
		s.stopWriter()
		_ = errors.Join(s.keys.close(), s.c.Close(), w.Close())
		return nil, fmt.Errorf("opening the database %s for reading: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s.r = r
	opened = true
	return s, nil
}

// Close stops the writer (after the writes in flight, and the retirement of keys or the WAL truncation if one
// is due), rewrites the key file and closes both connection pools.
func (s *Store) Close() error {
	s.stopWriter()
	kerr := s.keys.close()
	s.stmtMu.Lock()
	for _, st := range s.wStmts {
		_ = st.Close()
	}
	for _, st := range s.rStmts {
		_ = st.Close()
	}
	s.stmtMu.Unlock()
	err := errors.Join(kerr, s.r.Close(), s.c.Close(), s.w.Close())
	if s.lock != nil { // released last, once the connections are closed; a second Close finds it released
		err = errors.Join(err, s.lock.Close())
		s.lock = nil
	}
	return err
}

func (s *Store) stopWriter() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
	<-s.cpStopped
}

// write runs fn in a transaction on the single writer connection and returns once it is committed (or
// rolled back). Writes are group-committed: the writer goroutine takes every write waiting when it is free,
// runs each in its own savepoint of one IMMEDIATE transaction, and commits once, so concurrent writers share
// the cost of BEGIN, COMMIT and the WAL pages they touch. A write that fails rolls back to its savepoint
// and leaves the others alone. fn must use the ctx it is given (it does not cancel mid-statement: with
// SQLite an interrupted statement rolls back the whole transaction, everybody's writes included).
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-s.stopped:
		return errors.New("the store is closed")
	}
	return <-req.done // wait even if ctx ends: the write may be committed
}

type writeReq struct {
	ctx  context.Context
	fn   func(context.Context, *sql.Tx) error
	done chan error
}

// maxGroup bounds the writes committed together (so one commit's latency stays bounded).
const maxGroup = 128

// writer runs the writes until stop is closed. retireDelay after a commit that erased sensitive values it
// retires their keys (rekey; once for every such commit in that time), and truncateDelay after one that deleted
// history it truncates the WAL (a truncation that readers kept from completing is tried again later, see
// truncateRetryMax); before it returns it does either once more if due.
func (s *Store) writer(stop <-chan struct{}) {
	defer close(s.stopped)
	var retire <-chan time.Time // set while a retirement of keys is due
	var due <-chan time.Time    // set while a truncation is due
	var ready <-chan struct{}   // set while the checkpoint before a due truncation runs (checkpointAside)
	retry := truncateDelay      // the delay before the next attempt of a truncation that did not complete
	for {
		var first writeReq
		select {
		case first = <-s.writes:
		case <-retire:
			retire = nil
			s.rekey()
			continue
		case <-due:
			due, ready = nil, s.checkpointAside()
			continue
		case <-ready:
			ready = nil
			if s.truncateWAL() {
				retry = truncateDelay
			} else {
				retry = min(2*retry, truncateRetryMax)
				due = time.After(retry)
			}
			continue
		case <-stop:
			if retire != nil {
				s.rekey()
			}
			if ready != nil {
				<-ready
			}
			if due != nil || ready != nil {
				s.truncateWAL()
			}
			return
		}
		group := []writeReq{first}
	more:
		for len(group) < maxGroup {
			select {
			case r := <-s.writes:
				group = append(group, r)
			default:
				break more
			}
		}
		ended, shrink := s.commitGroup(group)
		if ended && retire == nil { // else the retirement to come covers it
			retire = time.After(retireDelay)
		}
		if shrink && due == nil && ready == nil { // else the truncation to come covers it
			due = time.After(truncateDelay)
		}
	}
}

// commitGroup runs and commits a group of writes; it reports whether it committed a write that erased
// sensitive values (ended) or deleted history (shrink).
func (s *Store) commitGroup(group []writeReq) (ended, shrink bool) {
	ctx := context.Background()
	s.ended, s.shrink = false, false
	errs := make([]error, len(group))
	defer func() {
		for i, r := range group {
			r.done <- errs[i]
		}
	}()
	defer s.preparePending(ctx)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("beginning a transaction: %w", err)
		}
		return
	}
	wrote := false
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		rctx := context.WithoutCancel(r.ctx)
		if len(group) == 1 {
			errs[i] = r.fn(rctx, tx) // alone: the transaction is its savepoint
			wrote = errs[i] == nil
			continue
		}
		if _, err := s.txExec(ctx, tx, `SAVEPOINT w`); err != nil {
			errs[i] = fmt.Errorf("opening a savepoint: %w", err)
			continue
		}
		if errs[i] = r.fn(rctx, tx); errs[i] != nil {
			if _, err := s.txExec(ctx, tx, `ROLLBACK TO w`); err != nil {
				// The transaction is unusable: fail everything in it.
				_ = tx.Rollback()
				for j := range errs {
					if errs[j] == nil || j == i {
						errs[j] = fmt.Errorf("rolling back a failed write: %w (after: %w)", err, errs[i])
					}
				}
				return
			}
		} else {
			wrote = true
		}
		if _, err := s.txExec(ctx, tx, `RELEASE w`); err != nil {
			_ = tx.Rollback()
			for j := range errs {
				if errs[j] == nil {
					errs[j] = fmt.Errorf("releasing a savepoint: %w", err)
				}
			}
			return
		}
	}
	if !wrote {
		_ = tx.Rollback()
		return
	}
	err = tx.Commit()
	s.committed.Store(true)
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("committing: %w", err)
			}
		}
		return false, false
	}
	return s.ended, s.shrink
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint failure.
func isUniqueViolation(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint failed") ||
		strings.Contains(err.Error(), "PRIMARY KEY constraint failed"))
}

// ---- value conversions ----

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullNanos(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---- prepared statements ----
//
// SQLite spends much of a small statement's time parsing it, so statement texts are prepared once and kept.
// The writer has a single connection, which an open transaction holds: a statement first seen inside a
// transaction runs unprepared there and is prepared right after the transaction ends. database/sql prepares
// reader statements once per reader connection. The lock is never held while waiting for a connection.

func (s *Store) cached(cache map[string]*sql.Stmt, q string) *sql.Stmt {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	return cache[q]
}

func (s *Store) keep(cache map[string]*sql.Stmt, q string, st *sql.Stmt) *sql.Stmt {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if old, ok := cache[q]; ok {
		_ = st.Close()
		return old
	}
	cache[q] = st
	return st
}

// preparePending prepares the writer statements that ran unprepared; call it with no transaction open.
func (s *Store) preparePending(ctx context.Context) {
	s.stmtMu.Lock()
	pending := s.pending
	s.pending = nil
	s.stmtMu.Unlock()
	for _, q := range pending {
		if s.cached(s.wStmts, q) != nil {
			continue
		}
		if st, err := s.w.PrepareContext(ctx, q); err == nil {
			s.keep(s.wStmts, q, st)
		}
	}
}

// txStmt returns q prepared for tx, or nil (after noting q for preparation) when it is not prepared yet.
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	if st := s.cached(s.wStmts, q); st != nil {
		return tx.StmtContext(ctx, st)
	}
	s.stmtMu.Lock()
	s.pending = append(s.pending, q)
	s.stmtMu.Unlock()
	return nil
}

func (s *Store) txRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	if st := s.txStmt(ctx, tx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, q, args...)
}

func (s *Store) txQuery(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	if st := s.txStmt(ctx, tx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}

func (s *Store) txExec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if st := s.txStmt(ctx, tx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

// wExec runs one statement as its own transaction on the writer.
func (s *Store) wExec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		res, err = s.txExec(ctx, tx, q, args...)
		return err
	})
	return res, err
}

func (s *Store) readStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st := s.cached(s.rStmts, q); st != nil {
		return st, nil
	}
	st, err := s.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.keep(s.rStmts, q, st), nil
}

func (s *Store) rRow(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return s.r.QueryRowContext(ctx, q, args...) // reports the same error
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *Store) rQuery(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}
