package sqlite

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/octo-worker/octo-worker/dispatch/api"
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
	for _, name := range []string{f.path, f.path + "-wal", f.path + "-shm"} {
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

// holding returns the files of the database that hold secret.
func (f *diskFixture) holding(t *testing.T, secret string) []string {
	t.Helper()
	var in []string
	for name, b := range f.files(t) {
		if bytes.Contains(b, []byte(secret)) {
			in = append(in, name)
		}
	}
	return in
}

// live checks that secret is on disk while its operation lives (so the checks after its end can fail), and
// forgets the truncations so far: the test then waits for one after the end.
func (f *diskFixture) live(t *testing.T, secret string) {
	t.Helper()
	if in := f.holding(t, secret); len(in) == 0 {
		t.Fatalf("while the operation lives its sensitive value is in none of %v: the scan cannot see it", keys(f.files(t)))
	}
	for len(f.truncated) > 0 {
		<-f.truncated
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
// ends, and reads every file of the database: the value is there while the operation lives, and in none of
// them after its end (once the WAL truncation that follows it ran) nor after Close.
func TestSensitiveValuesLeaveNoTraceOnDisk(t *testing.T) {
	t.Parallel()
	finished := func(state api.State, exit int) func(*testing.T, *diskFixture, string) {
		return func(t *testing.T, f *diskFixture, secret string) {
			f.enqueue(t, f.spec(secret))
			ref := f.running(t)
			f.live(t, secret)
			f.finish(t, ref, state, exit)
		}
	}
	cases := []struct {
		name string
		run  func(t *testing.T, f *diskFixture, secret string) // enqueues, calls f.live, ends
	}{
		{"succeeded", finished(api.StateSucceeded, 0)},
		{"failed", finished(api.StateFailed, 1)},
		{"timed out", finished(api.StateTimedOut, 124)},
		{"succeeded with a body larger than a page", func(t *testing.T, f *diskFixture, secret string) {
			spec := f.spec(secret)
			spec.Files = []api.File{{Path: "big.txt", Content: []byte(strings.Repeat("configuration ", 2000))}}
			f.enqueue(t, spec)
			ref := f.running(t)
			f.live(t, secret)
			f.finish(t, ref, api.StateSucceeded, 0)
		}},
		{"handed off, then succeeded", func(t *testing.T, f *diskFixture, secret string) {
			l, err := f.s.CreateLeasedOperation(t.Context(), store.NewOperation{ID: "op-h", Spec: f.spec(secret), CreatedAt: f.now},
				store.ClaimParams{WorkerID: "w", LeaseID: "l-h", Now: f.now, ExpiresAt: f.now.Add(time.Minute)})
			if err != nil || l == nil {
				t.Fatalf("CreateLeasedOperation = %v, %v", l, err)
			}
			f.live(t, secret)
			f.finish(t, store.LeaseRef{OperationID: "op-h", LeaseID: "l-h", WorkerID: "w", Now: f.now}, api.StateSucceeded, 0)
		}},
		{"the sealing key a lease stored", func(t *testing.T, f *diskFixture, secret string) {
			f.enqueue(t, api.OperationSpec{Pool: "p", Script: "deploy"})
			l, err := f.s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-k",
				Now: f.now, ExpiresAt: f.now.Add(time.Minute), PodTokenHash: "pod-token-hash", SealingKey: []byte(secret)})
			if err != nil || l == nil {
				t.Fatalf("Claim = %v, %v; want a lease", l, err)
			}
			f.live(t, secret)
			f.finish(t, store.LeaseRef{OperationID: l.Operation.ID, LeaseID: "l-k", WorkerID: "w", Now: f.now}, api.StateSucceeded, 0)
		}},
		{"cancelled while queued", func(t *testing.T, f *diskFixture, secret string) {
			id := f.enqueue(t, f.spec(secret))
			f.live(t, secret)
			if _, _, err := f.s.Cancel(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
		}},
		{"cancelled while running", func(t *testing.T, f *diskFixture, secret string) {
			id := f.enqueue(t, f.spec(secret))
			ref := f.running(t)
			if _, _, err := f.s.Cancel(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
			f.live(t, secret)
			f.finish(t, ref, api.StateCancelled, 143)
		}},
		{"lost by lease expiry", func(t *testing.T, f *diskFixture, secret string) {
			f.enqueue(t, f.spec(secret))
			f.running(t)
			f.live(t, secret)
			if ch, err := f.s.ExpireLeases(t.Context(), f.now.Add(time.Hour)); err != nil || len(ch.Ended) != 1 {
				t.Fatalf("ExpireLeases = %v, %v; want one operation lost", ch, err)
			}
		}},
		{"lost because its worker was removed", func(t *testing.T, f *diskFixture, secret string) {
			f.enqueue(t, f.spec(secret))
			f.running(t)
			f.live(t, secret)
			if r, err := f.s.RemoveWorker(t.Context(), "w", f.now); err != nil || len(r.Lost) != 1 {
				t.Fatalf("RemoveWorker = %v, %v; want one operation lost", r, err)
			}
		}},
		{"deployment step not run after a failed step", func(t *testing.T, f *diskFixture, secret string) {
			deploy(t, f, secret)
			ref := f.running(t)
			f.live(t, secret)
			f.finish(t, ref, api.StateFailed, 1)
		}},
		{"deployment cancelled", func(t *testing.T, f *diskFixture, secret string) {
			id := deploy(t, f, secret)
			f.live(t, secret)
			if _, _, err := f.s.CancelDeployment(t.Context(), id, f.now); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := openDisk(t)
			secret := fmt.Sprintf("Sensitive%dValue%x", i, time.Now().UnixNano())
			c.run(t, f, secret)
			for done := false; !done; {
				select {
				case done = <-f.truncated:
				case <-time.After(10 * time.Second): // a bound on a hang, far above truncateDelay
					t.Fatalf("no WAL truncation in 10s after the operation ended; the value is in %v", f.holding(t, secret))
				}
			}
			if in := f.holding(t, secret); len(in) > 0 {
				t.Errorf("after the end and the WAL truncation, the sensitive value is still in %v", in)
			}
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			if in := f.holding(t, secret); len(in) > 0 {
				t.Errorf("after Close, the sensitive value is still in %v", in)
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
	keep, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{path: 0o644, path + "-wal": 0o664, path + "-shm": 0o606}
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
