package podrunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// TestSpoolBoundAndTrim: the spool keeps records up to its bound and drops those beyond it (never waiting),
// frees whole files once the server holds their records, and keeps records again when there is room.
func TestSpoolBoundAndTrim(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, err := newSpool(dir, 10<<10)
	if err != nil {
		t.Fatal(err)
	}
	sp.segSize = 2 << 10
	rec := func(seq int64) []byte {
		return fmt.Appendf(nil, "%d|t|stdout|%s\n", seq, strings.Repeat("x", 1000-len(fmt.Sprint(seq))))
	}
	for seq := int64(1); seq <= 20; seq++ {
		sp.add(seq, rec(seq))
	}
	sp.flush()
	if sp.dropped != 10 {
		t.Errorf("dropped %d records at the bound, want 10", sp.dropped)
	}
	sp.trim(4)
	for seq := int64(21); seq <= 25; seq++ {
		sp.add(seq, rec(seq))
	}
	sp.flush()
	recs, err := sp.records(0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, r := range recs {
		seqs = append(seqs, recordSeq(r))
	}
	if want := []int64{5, 6, 7, 8, 9, 10, 21, 22, 23, 24}; fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Errorf("spooled seqs = %v, want %v", seqs, want)
	}
	if files, _ := os.ReadDir(dir); len(files) != 5 {
		t.Errorf("%d spool files after trimming, want 5 (2 KiB each)", len(files))
	}
	sp.close()
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("close left %d files", len(files))
	}
}

// recording is the pod's server, noting what the pod pushed.
type recording struct {
	podServer
	mu     sync.Mutex
	pushed [][]string
}

func (r *recording) PushLogs(ctx context.Context, recs []string) (api.PodLogState, error) {
	r.mu.Lock()
	r.pushed = append(r.pushed, recs)
	r.mu.Unlock()
	return r.podServer.PushLogs(ctx, recs)
}

// leased is an operation leased by a worker of a real dispatch server, with the pod's client.
type leased struct {
	srv    *dispatchtest.Server
	worker *client.Client
	lease  *api.Lease
	pod    *client.Pod
}

func lease(t *testing.T) leased {
	t.Helper()
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	if _, err := srv.Admin.CreatePool(t.Context(), "p", ""); err != nil {
		t.Fatal(err)
	}
	w, _ := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "1", Capacity: 1})
	if _, err := srv.Admin.Submit(t.Context(), api.OperationSpec{Pool: "p", Script: "x"}); err != nil {
		t.Fatal(err)
	}
	l, err := w.Lease(t.Context(), 0)
	if err != nil || l == nil || l.PodToken == "" {
		t.Fatalf("Lease = %+v, %v; want one with a pod token", l, err)
	}
	pod, err := client.NewPod(srv.URL, l.PodToken, client.Config{RetryMax: 1, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return leased{srv: srv, worker: w, lease: l, pod: pod}
}

// runner is a Runner of the operation whose pusher uses srv, acting fast.
func (l leased) runner(t *testing.T, script string, srv podServer, drain time.Duration) *Runner {
	t.Helper()
	r, err := New(Spec{OperationID: l.lease.Operation.ID, Syntax: "sh", Script: script}, l.lease.SealingKey, t.TempDir(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := newSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	r.push = newPusher(srv, sp, drain)
	r.push.check, r.push.stall = 10*time.Millisecond, 50*time.Millisecond
	return r
}

// TestPodPushesWhatTheServerLacks: with no worker delivering, the pod pushes every line the server lacks, and
// only those, then the end-of-stream marker, before the runner exits; the server stores each line once, in
// order, and tells the worker the marker.
func TestPodPushesWhatTheServerLacks(t *testing.T) {
	t.Parallel()
	const n = 3000
	for _, held := range []int64{0, 1000, n} {
		t.Run(fmt.Sprintf("server holds %d", held), func(t *testing.T) {
			t.Parallel()
			l := lease(t)
			id := l.lease.Operation.ID
			var lines []api.LogLine // what the worker delivered before
			for seq := int64(1); seq <= held; seq++ {
				lines = append(lines, api.LogLine{Seq: seq, Time: time.Now(), Stream: api.StreamStdout, Text: fmt.Sprintf("line %d", seq)})
			}
			if _, err := l.worker.AppendLogs(t.Context(), id, l.lease.LeaseID, lines); err != nil {
				t.Fatal(err)
			}
			rec := &recording{podServer: l.pod}
			code, err := l.runner(t, fmt.Sprintf("seq 1 %d | sed 's/^/line /'; exit 3", n), rec, time.Minute).Run(t.Context())
			if err != nil || code != 3 {
				t.Fatalf("Run = %d, %v", code, err)
			}
			var pushed []string
			for _, recs := range rec.pushed {
				pushed = append(pushed, recs...)
			}
			if len(pushed) == 0 || !strings.HasPrefix(pushed[len(pushed)-1], fmt.Sprint(n)+"|") || !strings.Contains(pushed[len(pushed)-1], "|eos|") {
				t.Fatalf("pushed %d records, the last not the marker", len(pushed))
			}
			pushed = pushed[:len(pushed)-1]
			if len(pushed) != n-int(held) || (len(pushed) > 0 && (recordSeq(pushed[0]) != held+1 || recordSeq(pushed[len(pushed)-1]) != n)) {
				t.Errorf("pushed %d lines; want lines %d..%d", len(pushed), held+1, n)
			}
			seq := int64(0)
			if _, err := l.srv.Admin.Logs(t.Context(), id, client.LogsOptions{}, func(ll api.LogLine) error {
				if seq++; ll.Seq != seq || ll.Text != fmt.Sprintf("line %d", seq) {
					return fmt.Errorf("stored line %d is %d %q", seq, ll.Seq, ll.Text)
				}
				return nil
			}); err != nil || seq != n {
				t.Errorf("stored %d lines in order (%v), want %d", seq, err, n)
			}
			resp, err := l.worker.AppendLogs(t.Context(), id, l.lease.LeaseID, nil)
			if err != nil || resp.LastSeq != n || resp.PodEnd == nil || *resp.PodEnd != (api.PodEnd{Seq: n, ExitCode: 3}) {
				t.Errorf("the worker asks: %+v (pod end %+v), %v; want last_seq %d and the marker with exit code 3", resp, resp.PodEnd, err, n)
			}
		})
	}
}

// TestRunnerNeverWaitsForAnAbsentServer: a server the pod cannot reach costs the script nothing and the runner
// exits with the script's code at once; a server that answered and then went away holds the runner's exit for
// the drain timeout at most.
func TestRunnerNeverWaitsForAnAbsentServer(t *testing.T) {
	t.Parallel()
	t.Run("never reachable", func(t *testing.T) {
		t.Parallel()
		l := lease(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		absent, err := client.NewPod("http://"+ln.Addr().String(), l.lease.PodToken, client.Config{RetryMax: 1})
		if err != nil {
			t.Fatal(err)
		}
		r := l.runner(t, "seq 1 2000; exit 5", absent, time.Hour)
		if code, err := r.Run(t.Context()); err != nil || code != 5 {
			t.Fatalf("Run = %d, %v; want 5", code, err)
		}
	})
	t.Run("gone after answering", func(t *testing.T) {
		t.Parallel()
		l := lease(t)
		goFile := filepath.Join(t.TempDir(), "go")
		r := l.runner(t, "echo first; until [ -f "+goFile+" ]; do sleep 0.01; done; echo second", l.pod, 300*time.Millisecond)
		done := make(chan int, 1)
		go func() {
			code, err := r.Run(context.Background())
			if err != nil {
				t.Error(err)
			}
			done <- code
		}()
		// The pod pushes "first" (no worker delivers it), then the server goes away.
		if _, err := l.srv.Admin.Logs(t.Context(), l.lease.Operation.ID, client.LogsOptions{Follow: true}, func(api.LogLine) error {
			return errors.New("first stored")
		}); err == nil || !strings.Contains(err.Error(), "first stored") {
			t.Fatalf("waiting for the pushed line: %v", err)
		}
		l.srv.Stop()
		if err := os.WriteFile(goFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if code := <-done; code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
}

// TestSpoolReadsOn: pushes read on from where the last one stopped, across segments, read windows (some
// smaller than a record) and while records are added, and a push from an earlier seq (a server that lost
// lines) reads from there again.
func TestSpoolReadsOn(t *testing.T) {
	t.Parallel()
	for _, window := range []int64{readWindow, 100, 40} {
		t.Run(fmt.Sprint(window), func(t *testing.T) { spoolReadsOn(t, window) })
	}
}

func spoolReadsOn(t *testing.T, window int64) {
	sp, err := newSpool(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	sp.segSize, sp.window = 2<<10, window
	add := func(from, to int64) {
		for seq := from; seq <= to; seq++ {
			sp.add(seq, fmt.Appendf(nil, "%d|t|stdout|%s\n", seq, strings.Repeat("x", int(seq%50))))
		}
		sp.flush()
	}
	read := func(after int64, n int) []int64 {
		recs, err := sp.records(after, n, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, r := range recs {
			seqs = append(seqs, recordSeq(r))
		}
		return seqs
	}
	add(1, 300)
	var got []int64
	added := false
	for after := int64(0); ; {
		seqs := read(after, 7)
		if len(seqs) == 0 {
			break
		}
		got = append(got, seqs...)
		after = seqs[len(seqs)-1]
		if after >= 150 && !added {
			add(301, 400)
			added = true
		}
	}
	if len(got) != 400 {
		t.Fatalf("read %d records, want 400", len(got))
	}
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("record %d has seq %d", i+1, seq)
		}
	}
	if seqs := read(99, 3); fmt.Sprint(seqs) != "[100 101 102]" {
		t.Errorf("reading after 99 again gave %v", seqs)
	}
	if seqs := read(396, 10); fmt.Sprint(seqs) != "[397 398 399 400]" {
		t.Errorf("reading after 396 gave %v", seqs)
	}
}
