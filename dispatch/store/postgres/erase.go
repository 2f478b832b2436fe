package postgres

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sensitive values on disk: what this driver does, and what it cannot do.
//
// store.go's rule asks that no sensitive value of an ended operation stays anywhere on disk. The SQLite driver
// keeps it (secure_delete zeroes freed bytes in place, and the WAL is truncated). PostgreSQL offers neither:
// an UPDATE writes a new row version and leaves the old one in place, VACUUM frees the space of old versions
// without overwriting it, and the WAL keeps what was written until its segment file is recycled. So, exactly:
//
//   - Done, in the transaction that ends an operation (Finish, Cancel, CancelDeployment, ExpireLeases,
//     RemoveWorker): its secrets, pod_token_hash and sealing_key are set to NULL. From the commit no query
//     returns them.
//   - Done, scrubDelay after commits that erased values (scrubAfter, called by every end; batched, replies do
//     not wait): a VACUUM of operations. It removes the dead row versions that still held them (every log
//     append and lease renewal of a live operation writes a new version of its row, each with the values),
//     and their entries in operations_pod_token, so no tool that reads rows or index entries (dead ones
//     included, e.g. pageinspect) finds them (TestEndsScrubSensitiveValues, one case per way of ending). One
//     exception: on a large table VACUUM may skip index cleanup when few pages hold dead rows (PostgreSQL
//     14+), leaving a pod token hash (a SHA-256 of a token that no longer authenticates) in that index until a
//     later vacuum. DeleteFinished vacuums the tables it deleted from.
//   - Not done, because PostgreSQL cannot: the bytes of removed versions stay in their page's free space until
//     PostgreSQL writes new rows over them; the WAL holds the values written while the operation lived until
//     its segment is recycled and overwritten (a checkpoint after the segment is full, then reuse), and WAL
//     archives, streaming replicas and base backups keep their own copies. (pg_dump does not: it reads live
//     rows only.)
//
// What an operator configures for that remainder: encrypt the volume that holds the data directory, and the
// WAL archive and backups, at rest; keep the data directory readable by the postgres user only (the default);
// do not archive WAL where the values must not go. ARCHITECTURE.md says the same for choosing a database.

// scrubDelay is how long after a commit that erased sensitive values operations is vacuumed. Like the SQLite
// driver's WAL truncation, one vacuum covers every end within that time.
const scrubDelay = 200 * time.Millisecond

// historyTables are the tables DeleteFinished deletes from.
var historyTables = []string{"log_chunks", "operations", "operation_packages", "deployments"}

// scrubber runs the vacuums scrubSoon asks for, one at a time, and stops with the store.
type scrubber struct {
	mu      sync.Mutex
	pending bool // a vacuum is scheduled and has not started
	closed  bool
	stop    chan struct{} // closed by Close: a scheduled vacuum runs at once
	wg      sync.WaitGroup
	// done, when set (tests), is called after each vacuum scrubSoon scheduled.
	done func()
}

// scrubSoon makes the store vacuum operations scrubDelay from now, unless a vacuum is already scheduled.
// Call it after a commit that erased sensitive values (an operation ended). It does not block.
func (s *Store) scrubSoon() {
	sc := &s.scrub
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.pending || sc.closed {
		return
	}
	if sc.stop == nil {
		sc.stop = make(chan struct{})
	}
	sc.pending = true
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		t := time.NewTimer(scrubDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-sc.stop:
		}
		sc.mu.Lock()
		sc.pending = false
		sc.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s.vacuum(ctx, []string{"operations"})
		if sc.done != nil {
			sc.done()
		}
	}()
}

// scrubAfter calls scrubSoon when ended (the operations a committed change ended, whose sensitive values it
// erased) is not empty. Every way an operation ends calls it after its commit.
func (s *Store) scrubAfter(ended []string) {
	if len(ended) > 0 {
		s.scrubSoon()
	}
}

// closeScrubber runs a scheduled vacuum at once and waits for it; later scrubSoon calls do nothing. Close
// calls it before it closes the pool.
func (s *Store) closeScrubber() {
	sc := &s.scrub
	sc.mu.Lock()
	if !sc.closed {
		sc.closed = true
		if sc.stop != nil {
			close(sc.stop)
		}
	}
	sc.mu.Unlock()
	sc.wg.Wait()
}

// vacuum runs VACUUM on tables (outside a transaction: VACUUM cannot run in one). A failure is logged, not
// returned: the rows are deleted or erased either way, and autovacuum removes them later. SKIP_LOCKED: a
// table another session holds exclusively (another server's VACUUM) is skipped, not waited for.
func (s *Store) vacuum(ctx context.Context, tables []string) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgx.Identifier{t}.Sanitize()
	}
	if _, err := s.pool.Exec(ctx, `VACUUM (SKIP_LOCKED) `+strings.Join(names, ", ")); err != nil {
		s.log.WithError(err).WithField("tables", tables).
			Warn("vacuuming after erasing sensitive values or deleting history (autovacuum will do it later)")
	}
}
