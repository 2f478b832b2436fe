package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// The shape of the operations the backup test writes: every operation's log arrives in batches of
// batchLines lines, each batch one write, then its result.
const (
	batchLines  = 50
	loadBatches = 3
)

// TestBackupOfALiveServerRestores backs up the database of a server under write load, restores the backup
// the documented way (stop, copy back, start) and checks that the server started on it has everything as of
// one moment during the backup: what was acknowledged before the backup started is all there, what was sent
// after it ended is not, and every operation in between is whole (its result only with all its log, its log
// in whole batches). Writes acknowledged while the backup ran show that it did not stop the server.
func TestBackupOfALiveServerRestores(t *testing.T) {
	t.Parallel()
	requireBackupCommand(t)
	ctx := t.Context()
	live := dispatchtest.Start(t, dispatchtest.Options{})
	admin := live.Admin

	// What the backup must carry besides the load: pools, workers and their tokens, a package, queued
	// operations with a sensitive value, ended ones with long logs (which also make the copy take a while),
	// and the admin token's hash (a setting: the restored server is started without --admin-token).
	const writers = 4
	for _, p := range []string{"idle", "history", "load-0", "load-1", "load-2", "load-3"} {
		if _, err := admin.CreatePool(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, idle := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "idle", Pools: []string{"idle"}, Version: "test", Capacity: 1})
	historian, _ := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "history", Pools: []string{"history"}, Version: "test", Capacity: 1})
	pkgPath := filepath.Join(t.TempDir(), "tools.tar.gz")
	if err := os.WriteFile(pkgPath, []byte("package content"), 0o600); err != nil {
		t.Fatal(err)
	}
	pkg, err := admin.PushPackage(ctx, pkgPath, "tools", "1.0")
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	for i := range 3 {
		op, err := admin.Submit(ctx, api.OperationSpec{Pool: "idle", Script: "true", Packages: []string{pkg.Ref()},
			Variables: []api.Variable{{Name: "SECRET", Value: fmt.Sprintf("secret-%d", i), Sensitive: true}}})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, op.ID)
	}
	const historyOps, historyBatches, historyLine = 6, 10, 1000
	var ended []string
	for range historyOps {
		ended = append(ended, runOperation(t, ctx, admin, historian, "history", historyBatches, historyLine, nil, nil))
	}

	// A reader on an old snapshot (another backup, say) keeps the server from checkpointing past it: what is
	// committed after it stays in the WAL, where a copy of the database file alone would miss it. Hold one
	// until the backup has run, so that what the load writes before the backup is certainly in the WAL only.
	reader, err := sql.Open("sqlite", live.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	longRead, err := reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer longRead.Rollback()
	var n int
	if err := longRead.QueryRow(`SELECT count(*) FROM operations`).Scan(&n); err != nil {
		t.Fatal(err)
	}

	// The load: each writer runs operations through its own worker, one after the other, and notes the phase
	// (odd while a backup runs) before each write and after its acknowledgement.
	var phase atomic.Int64
	load := newLoadLog()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range writers {
		pool := fmt.Sprintf("load-%d", i)
		w, _ := dispatchtest.Register(t, admin, api.RegisterRequest{Name: pool, Pools: []string{pool}, Version: "test", Capacity: 1})
		wg.Go(func() {
			for loadCtx.Err() == nil {
				submitted := phase.Load()
				id := runOperation(t, loadCtx, admin, w, pool, loadBatches, 20, &phase, func(before int64) {
					if before%2 == 1 && phase.Load() == before {
						load.wroteInside(before)
					}
				})
				if id == "" {
					return // the load was stopped mid-operation
				}
				load.add(loadOp{id: id, submitted: submitted, ended: phase.Load()})
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	// Back up once the load has ended two operations per writer; again (into a new file) until a write was
	// acknowledged while the backup ran.
	load.await(t, func(ops []loadOp) bool { return len(ops) >= 2*writers })
	dir := t.TempDir()
	var bak string
	var window int64
	for attempt := 1; ; attempt++ {
		bak = filepath.Join(dir, fmt.Sprintf("backup-%d.db", attempt))
		window = phase.Add(1)
		start := time.Now()
		out, _, err := cliRun(ctx, "server", "backup", "--db", live.DB, "--to", bak)
		took := time.Since(start)
		phase.Add(1)
		if err != nil {
			t.Fatalf("server backup: %v", err)
		}
		if !strings.Contains(out, "Backed up") {
			t.Errorf("server backup printed %q; want it to say what it did", out)
		}
		if n := load.inside(window); n > 0 {
			t.Logf("backup %d took %s; the server acknowledged %d writes while it ran", attempt, took, n)
			break
		}
		if attempt == 10 {
			t.Fatalf("in 10 backups, no write of the server was acknowledged while one ran: the backup blocks the server")
		}
	}
	if err := errors.Join(longRead.Rollback(), reader.Close()); err != nil {
		t.Fatal(err)
	}
	load.await(t, func(ops []loadOp) bool { // every writer has ended an operation sent after the backup
		n := 0
		for _, op := range ops {
			if op.submitted > window {
				n++
			}
		}
		return n >= writers
	})
	stopLoad()
	wg.Wait()
	if info, err := os.Stat(bak); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600 (it holds sensitive values)", info, err)
	}

	// Restore as the README says: stop the server, delete its WAL and shared-memory files, copy the backup
	// back, start a server on it.
	live.Stop()
	for _, name := range []string{live.DB + "-wal", live.DB + "-shm"} {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bak)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(live.DB, data, 0o600); err != nil {
		t.Fatal(err)
	}
	url, stopRestored := startServerKeepingToken(t, live.DB)
	restored, err := client.New(client.Config{Server: url, Token: dispatchtest.AdminToken})
	if err != nil {
		t.Fatal(err)
	}

	pools, err := restored.Pools(ctx)
	if err != nil {
		t.Fatalf("the admin token of the backed-up server on the restored one: %v; want it kept (a setting)", err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"history", "idle", "load-0", "load-1", "load-2", "load-3"}, names); diff != "" {
		t.Errorf("restored pools (-want +got):\n%s", diff)
	}
	if pkgs, err := restored.Packages(ctx); err != nil || len(pkgs) != 1 || pkgs[0].Ref() != pkg.Ref() {
		t.Errorf("restored packages = %+v, %v; want %s", pkgs, err, pkg.Ref())
	}
	if ws, err := restored.Workers(ctx); err != nil || len(ws) != 2+writers {
		t.Errorf("restored workers = %d, %v; want %d", len(ws), err, 2+writers)
	}
	for _, id := range ended {
		checkWhole(t, restored, id, historyBatches, true)
	}
	var before, after, between, betweenKept int
	for _, op := range load.all() {
		switch {
		case op.ended < window: // acknowledged before the backup started
			before++
			checkWhole(t, restored, op.id, loadBatches, true)
		case op.submitted > window: // sent after the backup ended
			after++
			if _, err := restored.Operation(ctx, op.id); !client.IsNotFound(err) {
				t.Errorf("operation %s, submitted after the backup ended, on the restored server: %v; want not found", op.id, err)
			}
		default:
			between++
			if checkWhole(t, restored, op.id, loadBatches, false) {
				betweenKept++
			}
		}
	}
	t.Logf("load operations: %d ended before the backup, %d sent after it, %d during it (%d of them in the copy)",
		before, after, between, betweenKept)

	// The restored server works: the idle worker, with the token it had, leases a queued operation and gets
	// its sensitive value.
	w := restored.WithToken(idle.WorkerToken)
	if _, err := w.Heartbeat(ctx, api.HeartbeatRequest{Version: "test", Capacity: 1, Running: []string{}, Health: api.Health{OK: true}}); err != nil {
		t.Fatalf("the idle worker's heartbeat on the restored server: %v; want its token kept", err)
	}
	l, err := w.Lease(ctx, 0)
	if err != nil || l == nil {
		t.Fatalf("the idle worker's lease on the restored server = %+v, %v; want one of %v", l, err, queued)
	}
	if i := indexOf(queued, l.Operation.ID); i < 0 || len(l.Operation.Variables) != 1 ||
		l.Operation.Variables[0].Value != fmt.Sprintf("secret-%d", i) {
		t.Errorf("leased %s with variables %+v; want one of %v with its secret", l.Operation.ID, l.Operation.Variables, queued)
	}
	stopRestored()

	// The copy was a plain database; the server that opened it made it what the store runs on.
	db, err := sql.Open("sqlite", live.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var journal string
	var vacuum int
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&journal); err != nil || journal != "wal" {
		t.Errorf("journal_mode of the restored database after a server ran on it = %q, %v; want wal", journal, err)
	}
	if err := db.QueryRow(`PRAGMA auto_vacuum`).Scan(&vacuum); err != nil || vacuum != 2 {
		t.Errorf("auto_vacuum of the restored database = %d, %v; want 2 (incremental)", vacuum, err)
	}
}

// runOperation submits an operation to pool, leases it with w, appends batches of batchLines lines (of about
// lineBytes bytes each) and ends it; it returns its id, or "" when ctx ended first. When phase is not nil,
// wrote is called after each acknowledged log batch and result with the phase read before sending it.
func runOperation(t *testing.T, ctx context.Context, admin, w *client.Client, pool string, batches, lineBytes int,
	phase *atomic.Int64, wrote func(before int64)) string {
	t.Helper()
	failed := func(err error) string {
		if ctx.Err() == nil {
			t.Error(err)
		}
		return ""
	}
	write := func(send func() error) error {
		if phase == nil {
			return send()
		}
		before := phase.Load()
		if err := send(); err != nil {
			return err
		}
		wrote(before)
		return nil
	}
	op, err := admin.Submit(ctx, api.OperationSpec{Pool: pool, Script: "true"})
	if err != nil {
		return failed(err)
	}
	// A worker that has not heartbeated for three intervals (15 s) gets no lease; a slow run takes longer.
	_, err = w.Heartbeat(ctx, api.HeartbeatRequest{Version: "test", Capacity: 1, Running: []string{}, Health: api.Health{OK: true}})
	if err != nil {
		return failed(err)
	}
	l, err := w.Lease(ctx, 10*time.Second)
	if err == nil && (l == nil || l.Operation.ID != op.ID) {
		err = fmt.Errorf("leased %+v in pool %s; want %s", l, pool, op.ID)
	}
	if err != nil {
		return failed(err)
	}
	for b := range batches {
		lines := make([]api.LogLine, batchLines)
		for i := range lines {
			seq := int64(b*batchLines + i + 1)
			lines[i] = api.LogLine{Seq: seq, Time: time.Now(), Stream: api.StreamStdout, Text: lineText(seq, lineBytes)}
		}
		if err := write(func() error { _, err := w.AppendLogs(ctx, op.ID, l.LeaseID, lines); return err }); err != nil {
			return failed(err)
		}
	}
	exit := 0
	if err := write(func() error {
		_, err := w.Result(ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: &exit,
			LastSeq: int64(batches * batchLines)})
		return err
	}); err != nil {
		return failed(err)
	}
	return op.ID
}

func lineText(seq int64, n int) string {
	s := fmt.Sprintf("line %d ", seq)
	return s + strings.Repeat("x", max(0, n-len(s)))
}

// checkWhole checks the operation id on the server c: when it is there, its log is lines 1..n in whole batches,
// all batches of it when it has ended successfully, none when it is queued. It reports whether the operation
// is there; must says it has to be, ended with all its log.
func checkWhole(t *testing.T, c *client.Client, id string, batches int, must bool) bool {
	t.Helper()
	op, err := c.Operation(t.Context(), id)
	if client.IsNotFound(err) && !must {
		return false
	}
	if err != nil {
		t.Errorf("operation %s on the restored server: %v", id, err)
		return false
	}
	var n int64
	var bad string
	if _, err := c.Logs(t.Context(), id, client.LogsOptions{}, func(l api.LogLine) error {
		n++
		if l.Seq != n && bad == "" {
			bad = fmt.Sprintf("line %d has seq %d", n, l.Seq)
		}
		return nil
	}); err != nil {
		t.Errorf("log of %s on the restored server: %v", id, err)
	}
	all := int64(batches * batchLines)
	switch {
	case bad != "":
		t.Errorf("log of %s on the restored server: %s; want lines 1..n", id, bad)
	case n%batchLines != 0:
		t.Errorf("log of %s on the restored server has %d lines, part of a batch (batches of %d are one write each)", id, n, batchLines)
	case op.State == api.StateSucceeded && n != all:
		t.Errorf("%s on the restored server has its result but %d of its %d log lines (sent before the result)", id, n, all)
	case op.State == api.StateQueued && n != 0:
		t.Errorf("%s on the restored server is queued with %d log lines", id, n)
	case must && op.State != api.StateSucceeded:
		t.Errorf("%s on the restored server is %s; it had succeeded before the backup started", id, op.State)
	}
	return true
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// loadOp is one operation of the load: its id, the phase before it was submitted and after its result was
// acknowledged.
type loadOp struct {
	id               string
	submitted, ended int64
}

// loadLog collects what the load did, for the test to wait on and check.
type loadLog struct {
	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) on every change
	ops     []loadOp
	writes  map[int64]int // writes sent and acknowledged within one odd phase (a backup running)
}

func newLoadLog() *loadLog { return &loadLog{changed: make(chan struct{}), writes: map[int64]int{}} }

func (l *loadLog) update(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn()
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *loadLog) add(op loadOp)           { l.update(func() { l.ops = append(l.ops, op) }) }
func (l *loadLog) wroteInside(phase int64) { l.update(func() { l.writes[phase]++ }) }

func (l *loadLog) inside(phase int64) int { l.mu.Lock(); defer l.mu.Unlock(); return l.writes[phase] }

func (l *loadLog) all() []loadOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loadOp(nil), l.ops...)
}

// await waits until cond holds for the operations ended so far (or fails the test when it ends).
func (l *loadLog) await(t *testing.T, cond func([]loadOp) bool) {
	t.Helper()
	for {
		l.mu.Lock()
		ok, changed := cond(l.ops), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-t.Context().Done():
			t.Fatal("the test ended while waiting on the load")
		}
	}
}

// requireBackupCommand fails the test at once when `server backup` does not exist: `server` would take
// "backup" for an argument and serve on its default address until the test times out.
func requireBackupCommand(t *testing.T) {
	t.Helper()
	if server := newApp("test").Command("server"); server == nil || server.Command("backup") == nil {
		t.Fatal("octo-worker has no `server backup` command")
	}
}

// startServerKeepingToken runs `octo-worker server` on db, which holds an admin token's hash already (so the
// server prints nothing), until the test ends; it returns the URL once the server answers, and a function that
// stops it now.
func startServerKeepingToken(t *testing.T, db string) (string, func()) {
	t.Helper()
	addr := closedAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_, _, runErr = cliRun(ctx, "server", "--listen", addr, "--db", db)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-exited
			if runErr != nil {
				t.Errorf("server command: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	url := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("the server on %s exited: %v", db, runErr)
		default:
		}
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			return url, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server on %s does not answer after 20s", db)
		}
	}
}

// TestBackupRefusals: what server backup refuses, before it touches anything, and what it says to do.
func TestBackupRefusals(t *testing.T) {
	t.Parallel()
	requireBackupCommand(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("an older backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := dispatchtest.Start(t, dispatchtest.Options{})
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the error
		not  string   // not in the error
	}{
		{"postgres URL", []string{"--db", "postgres://octo:pa55word@db.example:5432/octo", "--to", "octo.dump"},
			[]string{"--db", "pg_dump --format=custom --file=octo.dump postgres://octo@db.example:5432/octo", "pg_restore", "PGPASSWORD"}, "pa55word"},
		{"postgresql URL", []string{"--db", "postgresql://db.example/octo?sslmode=require"},
			[]string{"pg_dump --format=custom --file=octo-worker.dump 'postgresql://db.example/octo?sslmode=require'"}, "PGPASSWORD"},
		{"no --to", []string{"--db", live.DB}, []string{"--to: give the name"}, ""},
		{"existing --to", []string{"--db", live.DB, "--to", existing}, []string{"--to", existing, "never overwrites", "choose a new file name"}, ""},
		{"missing --db", []string{"--db", filepath.Join(dir, "missing.db"), "--to", filepath.Join(dir, "b1.db")},
			[]string{"--db", "no database at", "the database file the server runs with"}, ""},
		{"not a database", []string{"--db", existing, "--to", filepath.Join(dir, "b2.db")}, []string{"not a database"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t.Context(), append([]string{"server", "backup"}, tc.args...)...)
			var ec cli.ExitCoder
			if err == nil {
				t.Fatal("server backup succeeded; want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.not != "" && strings.Contains(err.Error(), tc.not) {
				t.Errorf("error %q shows %q", err, tc.not)
			}
			if errors.As(err, &ec) && ec.ExitCode() == 0 {
				t.Errorf("exit code 0 for a refusal")
			}
		})
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "an older backup" {
		t.Errorf("the existing file after the refusal: %q, %v; want it untouched", b, err)
	}
	for _, name := range []string{"missing.db", "b1.db", "b2.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a refused backup: %v; want no such file", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory after the refusals holds %d files; want only existing.db (no partial copies)", len(ents))
	}
}
