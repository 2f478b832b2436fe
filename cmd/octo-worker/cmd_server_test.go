package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// history writes, into a new database at db, operations of pool p that ended at each of ended, and one queued
// since the oldest; it returns their ids in that order, the queued one last.
func history(t *testing.T, db string, ended ...time.Time) []string {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	first := ended[0]
	if err := st.CreatePool(ctx, api.Pool{Name: "p", CreatedAt: first}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateWorker(ctx, store.Worker{Worker: api.Worker{ID: "w", Name: "w", Pools: []string{"p"}, Version: "1", Capacity: 1,
		Healthy: true, RegisteredAt: first, LastHeartbeat: first}, TokenHash: []byte("hash-w"), TokenID: "t"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	exit := 0
	for i, at := range ended {
		id := "op-" + string(rune('a'+i))
		if _, err := st.CreateOperation(ctx, store.NewOperation{ID: id, Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		l, err := st.Claim(ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-" + id, Now: at, ExpiresAt: at.Add(time.Minute)})
		if err != nil || l == nil {
			t.Fatalf("Claim = %v, %v", l, err)
		}
		ref := store.LeaseRef{OperationID: id, LeaseID: l.LeaseID, WorkerID: "w", Now: at}
		if _, _, err := st.Finish(ctx, ref, store.Result{State: api.StateSucceeded, ExitCode: &exit}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := st.CreateOperation(ctx, store.NewOperation{ID: "op-queued", Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: first}); err != nil {
		t.Fatal(err)
	}
	return append(ids, "op-queued")
}

// TestRetentionDeletesOldHistoryAtStart: a server started with --retention deletes at once what ended longer
// ago, and keeps what ended since and what has not ended.
func TestRetentionDeletesOldHistoryAtStart(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "d.db")
	now := time.Now()
	ids := history(t, db, now.Add(-72*time.Hour), now.Add(-time.Hour))
	url, token, _ := startServerOn(t, db, "--retention", "24h")
	admin, err := client.New(client.Config{Server: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	// The first run starts with the server; wait for its effect (a bound, not a timing: it takes milliseconds).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := admin.Operation(t.Context(), ids[0])
		if client.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operation that ended 72h ago is still there 20s after a start with --retention 24h: %v", err)
		}
	}
	for _, id := range ids[1:] {
		if _, err := admin.Operation(t.Context(), id); err != nil {
			t.Errorf("operation %s (ended 1h ago, or queued) after retention: %v; want it kept", id, err)
		}
	}
}

// TestRetentionZeroKeepsEverything: --retention 0 deletes nothing, however old.
func TestRetentionZeroKeepsEverything(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "d.db")
	ids := history(t, db, time.Now().Add(-365*24*time.Hour))
	_, _, stop := startServerOn(t, db, "--retention", "0")
	stop() // a retention started with the server would have run its first pass by now, or been cancelled in it
	st, err := sqlite.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range ids {
		if _, err := st.Operation(t.Context(), id); err != nil {
			t.Errorf("operation %s after a server with --retention 0: %v; want it kept", id, err)
		}
	}
}

// TestServerRefusesNegativeRetention: a negative --retention (or OCTO_RETENTION) is refused before anything
// starts, with an error naming the flag.
func TestServerRefusesNegativeRetention(t *testing.T) {
	db := filepath.Join(t.TempDir(), "d.db")
	for _, env := range []bool{false, true} {
		args := []string{"server", "--listen", "127.0.0.1:0", "--db", db}
		if env {
			t.Setenv("OCTO_RETENTION", "-1h")
		} else {
			args = append(args, "--retention", "-1h")
		}
		_, _, err := cliRun(t.Context(), args...)
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), "--retention") || !strings.Contains(err.Error(), "0 to keep everything") {
			t.Errorf("server with a negative retention (env %v): %v; want exit code 2 and an error naming --retention", env, err)
		}
	}
}

// TestServerRefusesAnotherPackagesDir: a server of a database whose packages live elsewhere is refused at
// start, with an error naming --packages-dir, instead of serving without the others' packages.
func TestServerRefusesAnotherPackagesDir(t *testing.T) {
	db := filepath.Join(t.TempDir(), "d.db")
	_, _, stop := startServerOn(t, db) // packages in the default d.db.packages
	stop()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a server that starts serves until then
	defer cancel()
	_, _, err := cliRun(ctx, "server", "--listen", "127.0.0.1:0", "--db", db, "--packages-dir", t.TempDir())
	if err == nil || !strings.HasPrefix(err.Error(), "--packages-dir: ") || !strings.Contains(err.Error(), "must share one packages directory") {
		t.Errorf("server with another --packages-dir: %v; want a refusal naming the flag", err)
	}
}
