package sqlite

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// diskFixture is a store on a file whose bytes a test reads, with a signal for every WAL truncation.
type diskFixture struct {
	s         *Store
	path      string
	now       time.Time
	n         int
	truncated chan bool
}

func openDisk(t *testing.T) *diskFixture {
	t.Helper()
	f := &diskFixture{path: filepath.Join(t.TempDir(), "dispatch.db"), now: time.Now(), truncated: make(chan bool, 1000)}
	s, err := Open(t.Context(), f.path, func(s *Store) {
		s.truncated = func(done bool) {
			select {
			case f.truncated <- done:
			default:
			}
		}
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f.s = s
	if err := s.CreatePool(t.Context(), api.Pool{Name: "p", CreatedAt: f.now}); err != nil {
		t.Fatal(err)
	}
	ensureWorker(t, s, "w")
	return f
}

// spec is an operation of pool p with secret as its sensitive variable's value.
func (f *diskFixture) spec(secret string) api.OperationSpec {
	return api.OperationSpec{Pool: "p", Script: "deploy", Variables: []api.Variable{
		{Name: "REGION", Value: "eu"}, {Name: "TOKEN", Value: secret, Sensitive: true}}}
}

func (f *diskFixture) enqueue(t *testing.T, spec api.OperationSpec) string {
	t.Helper()
	f.n++
	id := fmt.Sprintf("op-%d", f.n)
	if _, err := f.s.CreateOperation(t.Context(), store.NewOperation{ID: id, Spec: spec, CreatedAt: f.now}); err != nil {
		t.Fatal(err)
	}
	return id
}

// running claims the oldest queued operation for worker w and marks it running.
func (f *diskFixture) running(t *testing.T) store.LeaseRef {
	t.Helper()
	f.n++
	l, err := f.s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: fmt.Sprintf("l-%d", f.n),
		Now: f.now, ExpiresAt: f.now.Add(time.Minute)})
	if err != nil || l == nil {
		t.Fatalf("Claim = %v, %v; want a lease", l, err)
	}
	ref := store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "w", Now: f.now}
	if _, err := f.s.SetRunning(t.Context(), ref, ""); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (f *diskFixture) finish(t *testing.T, ref store.LeaseRef, state api.State, exit int) {
	t.Helper()
	if _, _, err := f.s.Finish(t.Context(), ref, store.Result{State: state, ExitCode: &exit}); err != nil {
		t.Fatal(err)
	}
}

// files returns the name of every file of the database that exists, and what it holds.
func (f *diskFixture) files(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range []string{f.path, f.path + "-wal", f.path + "-shm", KeysPath(f.path)} {
		b, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(name)] = b
	}
	return out
}

// holding returns the files of the database that hold secret (raw or in base64, as the key file holds keys).
func (f *diskFixture) holding(t *testing.T, secret []byte) []string {
	t.Helper()
	var in []string
	for name, b := range f.files(t) {
		if bytes.Contains(b, secret) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(secret))) {
			in = append(in, name)
		}
	}
	return in
}

// live checks that, while its operation lives, secret is on disk only sealed: in clear in no file, and
// sealed in a value of the database that a key of the key file opens (so the checks after its end can fail).
// It returns that key.
func (f *diskFixture) live(t *testing.T, secret string) []byte {
	t.Helper()
	if in := f.holding(t, []byte(secret)); len(in) > 0 {
		t.Fatalf("while the operation lives, its sensitive value is in clear in %v", in)
	}
	keys, err := readKeys(KeysPath(f.path))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", sqlitedsn.DSN(f.path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range sealedCols {
		rows, err := db.QueryContext(t.Context(), `SELECT `+c.col+` FROM operations WHERE `+c.col+` IS NOT NULL`)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := scanAll(rows, nil, func(r scanner) ([]byte, error) {
			var v []byte
			return v, r.Scan(&v)
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			plain, err := openSealed(v, c.ad, func(id uint32) *sealKey { return keys[id] })
			if err == nil && bytes.Contains(plain, []byte(secret)) {
				return keys[binary.BigEndian.Uint32(v[1:5])].raw
			}
		}
	}
	t.Fatalf("no sealed value of the database opens to the sensitive value with the keys of %s: the scan cannot see it", KeysPath(f.path))
	return nil
}

// retired waits until the key file no longer holds key, and checks that no file of the database does.
func (f *diskFixture) retired(t *testing.T, key []byte) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // a bound on a hang, far above retireDelay
		if len(f.holding(t, key)) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the operation ended, its key is still in %v", f.holding(t, key))
		}
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// TestSensitiveValuesLeaveNoTraceOnDisk ends an operation with a sensitive value in each way an operation
// ends, and reads every file of the database and the key file beside it: the value is never in any of them
// in clear; while the operation lives it is sealed in the database under a key of the key file, and soon after
// its end that key is in none of them (so what the WAL still holds of the value cannot be opened), nor after
// Close.
func TestSensitiveValuesLeaveNoTraceOnDisk(t *testing.T) {
	t.Parallel()
	finished := func(state api.State, exit int) func(*testing.T, *diskFixture, string) []byte {
		return func(t *testing.T, f *diskFixture, secret string) []byte {
			f.enqueue(t, f.spec(secret))
			ref := f.running(t)
			key := f.live(t, secret)
			f.finish(t, ref, state, exit)
			return key
		}
	}
	cases := []struct {
		name string
		run  func(t *testing.T, f *diskFixture, secret string) []byte // enqueues, calls f.live, ends; returns f.live's key
	}{
		{"succeeded", finished(api.StateSucceeded, 0)},
		{"failed", finished(api.StateFailed, 1)},
		{"timed out", finished(api.StateTimedOut, 124)},
		{"succeeded with a body larger than a page", func(t *testing.T, f *diskFixture, secret string) []byte {
			spec := f.spec(secret)
			spec.Files = []api.File{{Path: "big.txt", Content: []byte(strings.Repeat("configuration ", 2000))}}
			f.enqueue(t, spec)
			ref := f.running(t)
			key := f.live(t, secret)
			f.finish(t, ref, api.StateSucceeded, 0)
			return key
		}},
		{"handed off, then succeeded", func(t *testing.T, f *diskFixture, secret string) []byte {
			l, err := f.s.CreateLeasedOperation(t.Context(), store.NewOperation{ID: "op-h", Spec: f.spec(secret), CreatedAt: f.now},
				store.ClaimParams{WorkerID: "w", LeaseID: "l-h", Now: f.now, ExpiresAt: f.now.Add(time.Minute)})
			if err != nil || l == nil {
				t.Fatalf("CreateLeasedOperation = %v, %v", l, err)
			}
			key := f.live(t, secret)
			f.finish(t, store.LeaseRef{OperationID: "op-h", LeaseID: "l-h", WorkerID: "w", Now: f.now}, api.StateSucceeded, 0)
			return key
		}},
		{"the sealing key a lease stored", func(t *testing.T, f *diskFixture, secret string) []byte {
			f.enqueue(t, api.OperationSpec{Pool: "p", Script: "deploy"})
			l, err := f.s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-k",
				Now: f.now, ExpiresAt: f.now.Add(time.Minute), PodTokenHash: "pod-token-hash", SealingKey: []byte(secret)})
			if err != nil || l == nil {
				t.Fatalf("Claim = %v, %v; want a lease", l, err)
			}
			key := f.live(t, secret)
			f.finish(t, store.LeaseRef{OperationID: l.Operation.ID, LeaseID: "l-k", WorkerID: "w", Now: f.now}, api.StateSucceeded, 0)
			return key
		}},
		{"cancelled while queued", func(t *testing.T, f *diskFixture, secret string) []byte {
			id := f.enqueue(t, f.spec(secret))
			key := f.live(t, secret)
			if _, _, err := f.s.Cancel(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
			return key
		}},
		{"cancelled while running", func(t *testing.T, f *diskFixture, secret string) []byte {
			id := f.enqueue(t, f.spec(secret))
			ref := f.running(t)
			if _, _, err := f.s.Cancel(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
			key := f.live(t, secret)
			f.finish(t, ref, api.StateCancelled, 143)
			return key
		}},
		{"lost by lease expiry", func(t *testing.T, f *diskFixture, secret string) []byte {
			f.enqueue(t, f.spec(secret))
			f.running(t)
			key := f.live(t, secret)
			if ch, err := f.s.ExpireLeases(t.Context(), f.now.Add(time.Hour)); err != nil || len(ch.Ended) != 1 {
				t.Fatalf("ExpireLeases = %v, %v; want one operation lost", ch, err)
			}
			return key
		}},
		{"lost because its worker was removed", func(t *testing.T, f *diskFixture, secret string) []byte {
			f.enqueue(t, f.spec(secret))
			f.running(t)
			key := f.live(t, secret)
			if r, err := f.s.RemoveWorker(t.Context(), "w", f.now); err != nil || len(r.Lost) != 1 {
				t.Fatalf("RemoveWorker = %v, %v; want one operation lost", r, err)
			}
			return key
		}},
		{"deployment step not run after a failed step", func(t *testing.T, f *diskFixture, secret string) []byte {
			deploy(t, f, secret)
			ref := f.running(t)
			key := f.live(t, secret)
			f.finish(t, ref, api.StateFailed, 1)
			return key
		}},
		{"deployment cancelled", func(t *testing.T, f *diskFixture, secret string) []byte {
			id := deploy(t, f, secret)
			key := f.live(t, secret)
			if _, _, err := f.s.CancelDeployment(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
			return key
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := openDisk(t)
			secret := fmt.Sprintf("Sensitive%dValue%x", i, time.Now().UnixNano())
			key := c.run(t, f, secret)
			f.retired(t, key)
			if in := f.holding(t, []byte(secret)); len(in) > 0 {
				t.Errorf("after the end, the sensitive value is in clear in %v", in)
			}
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			if in := f.holding(t, key); len(in) > 0 {
				t.Errorf("after Close, the key of the sensitive value is in %v", in)
			}
			if in := f.holding(t, []byte(secret)); len(in) > 0 {
				t.Errorf("after Close, the sensitive value is in clear in %v", in)
			}
		})
	}
}

// deploy enqueues a deployment whose second step carries secret; it returns the deployment's id.
func deploy(t *testing.T, f *diskFixture, secret string) string {
	t.Helper()
	d := store.NewDeployment{ID: "dep", Name: "release", CreatedAt: f.now, Steps: []store.NewOperation{
		{ID: "step-1", Spec: api.OperationSpec{Pool: "p", Script: "migrate"}, CreatedAt: f.now},
		{ID: "step-2", Spec: f.spec(secret), CreatedAt: f.now},
	}}
	if _, err := f.s.CreateDeployment(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	return d.ID
}

// TestOpenMakesExistingFilesPrivate: a database, WAL and shared-memory file that others may read are made
// 0600 at open, each with a warning naming the file and its old mode.
func TestOpenMakesExistingFilesPrivate(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	if err := s.SetSetting(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	// A second connection keeps the WAL and shared-memory files in place across Close.
	keep, err := sql.Open("sqlite", sqlitedsn.DSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	if _, err := keep.ExecContext(t.Context(), `SELECT COUNT(*) FROM settings`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{path: 0o644, path + "-wal": 0o664, path + "-shm": 0o606, KeysPath(path): 0o640}
	for name, mode := range modes {
		if err := os.Chmod(name, mode); err != nil {
			t.Fatal(err)
		}
	}
	log, hook := test.NewNullLogger()
	s, err = Open(t.Context(), path, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	warned := map[string]string{}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["file"] != nil {
			warned[e.Data["file"].(string)] = e.Data["old_mode"].(string)
		}
	}
	for name, mode := range modes {
		info, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %#o after Open, want 0600", filepath.Base(name), perm)
		}
		if want := fmt.Sprintf("%#o", mode); warned[name] != want {
			t.Errorf("warning for %s says old mode %q, want %q (all warnings: %v)", filepath.Base(name), warned[name], want, warned)
		}
	}
	if v, err := s.Setting(t.Context(), "k"); err != nil || v != "v" {
		t.Errorf("after reopening Setting = %q, %v", v, err)
	}
}

// TestSecondStoreOnOneFileIsRefused: a database serves one store at a time (each would write the key file
// with keys of its own); the second Open says so and what to do, and succeeds once the first is closed.
func TestSecondStoreOnOneFileIsRefused(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	if _, err := Open(t.Context(), path); err == nil || !strings.Contains(err.Error(), "another octo-worker server uses the database") ||
		!strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("a second Open on one file = %v; want it refused, naming PostgreSQL for several servers", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("a second Close = %v; want nil", err)
	}
	s2, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open after the first store closed: %v", err)
	}
	_ = s2.Close()
}

// TestLostKeyFileIsAClearError: a database whose queued operations hold sealed values does not open without
// the key file that opens them, and the error names the file and what to do; nothing is lost meanwhile.
func TestLostKeyFileIsAClearError(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	f.enqueue(t, f.spec("kept-sealed"))
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(KeysPath(f.path))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(KeysPath(f.path)); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), f.path)
	if err == nil || !strings.Contains(err.Error(), KeysPath(f.path)) || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("Open without the key file = %v; want an error naming %s and saying to restore it", err, KeysPath(f.path))
	}
	if err := os.WriteFile(KeysPath(f.path), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), f.path)
	if err != nil {
		t.Fatalf("Open with the key file restored: %v", err)
	}
	defer s.Close()
	if v, err := s.SensitiveValues(t.Context(), "op-1"); err != nil || len(v) != 1 || v[0] != "kept-sealed" {
		t.Errorf("SensitiveValues after the key file came back = %v, %v; want [kept-sealed]", v, err)
	}
}

// TestBackupHoldsValuesInClearAndOpenSealsThem: a backup needs no key file (it holds the queued operations'
// sensitive values in clear, as documented), and opening it seals them: after Open no file of the restored
// database holds them in clear, and a lease still carries them.
func TestBackupHoldsValuesInClearAndOpenSealsThem(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	const secret = "restored-from-a-backup"
	f.enqueue(t, api.OperationSpec{Pool: "p", Script: "deploy"})
	if _, err := f.s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-k", Now: f.now,
		ExpiresAt: f.now.Add(time.Minute), PodTokenHash: "hash", SealingKey: []byte("sealing-key-of-a-lease")}); err != nil {
		t.Fatal(err)
	}
	f.enqueue(t, f.spec(secret))
	to := filepath.Join(t.TempDir(), "restored.db")
	if err := Backup(t.Context(), f.path, to); err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile(to)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(copied, []byte(secret)) || !bytes.Contains(copied, []byte("sealing-key-of-a-lease")) {
		t.Fatal("the backup does not hold the sensitive value and the sealing key in clear: the checks below cannot fail")
	}
	r := &diskFixture{path: to, now: f.now}
	if r.s, err = Open(t.Context(), to); err != nil {
		t.Fatal(err)
	}
	defer r.s.Close()
	for _, v := range []string{secret, "sealing-key-of-a-lease"} {
		if in := r.holding(t, []byte(v)); len(in) > 0 {
			t.Errorf("after Open, %q is in clear in %v", v, in)
		}
	}
	r.live(t, secret)
	pl, err := r.s.PodLease(t.Context(), "hash")
	if err != nil || string(pl.SealingKey) != "sealing-key-of-a-lease" {
		t.Errorf("PodLease on the restored database = %+v, %v; want the sealing key", pl, err)
	}
	// The second operation is queued: the lease carries its value.
	l, err := r.s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-r", Now: f.now, ExpiresAt: f.now.Add(time.Minute)})
	if err != nil || l == nil || l.Operation.Variables[1].Value != secret {
		t.Errorf("Claim on the restored database = %+v, %v; want the operation with %q", l, err, secret)
	}
}

// TestRetirementResealsOnlyTheEndedKeysValues: the current key changes after rotateAfter values, so a long
// queue is sealed under several keys, and an operation's end retires its key only: the values still live
// under that key are sealed again under another, and the rest of the queue keeps its keys (a retirement
// costs what one key holds, not what the queue holds). Every value still opens afterwards.
func TestRetirementResealsOnlyTheEndedKeysValues(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	n := 2*rotateAfter + 10
	for i := range n {
		f.enqueue(t, f.spec(fmt.Sprintf("value-%d", i)))
	}
	kids := func() map[string]int64 {
		t.Helper()
		db, err := sql.Open("sqlite", sqlitedsn.DSN(f.path, false))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.QueryContext(t.Context(), `SELECT id, secrets_kid FROM operations WHERE secrets IS NOT NULL`)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int64{}
		for rows.Next() {
			var id string
			var kid int64
			if err := rows.Scan(&id, &kid); err != nil {
				t.Fatal(err)
			}
			m[id] = kid
		}
		return m
	}
	before := kids()
	distinct := map[int64]int{}
	for _, k := range before {
		distinct[k]++
	}
	if len(distinct) < 3 {
		t.Fatalf("%d queued values are sealed under %d keys (%v); want a new key every %d values", n, len(distinct), distinct, rotateAfter)
	}
	first := before["op-1"]
	key := f.live(t, "value-0")
	if _, _, err := f.s.Cancel(t.Context(), "op-1", f.now); err != nil {
		t.Fatal(err)
	}
	f.retired(t, key)
	after := kids()
	moved := 0
	for id, k := range after {
		switch {
		case before[id] == first && k == first:
			t.Errorf("%s is still sealed under the retired key %d", id, first)
		case before[id] == first:
			moved++
		case k != before[id]:
			t.Errorf("%s moved from key %d to %d, though its key was not retired", id, before[id], k)
		}
	}
	if moved != distinct[first]-1 {
		t.Errorf("%d values were sealed again; want the %d still live under the retired key", moved, distinct[first]-1)
	}
	for _, i := range []int{1, rotateAfter, n - 1} {
		id := fmt.Sprintf("op-%d", i+1)
		if v, err := f.s.SensitiveValues(t.Context(), id); err != nil || len(v) != 1 || v[0] != fmt.Sprintf("value-%d", i) {
			t.Errorf("SensitiveValues(%s) after the retirement = %v, %v", id, v, err)
		}
	}
}
