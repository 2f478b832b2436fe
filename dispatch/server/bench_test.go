package server

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
)

// The benchmarks report ratios against a baseline measured in the same run (scripts/bench-dispatch.sh runs
// them): the machine is shared, so only ratios compare across runs.

// bareServer is the baseline: a no-op HTTP handler on the same loopback.
func bareServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}\n"))
	})}
	go func() { _ = hs.Serve(ln) }()
	b.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// BenchmarkEnqueueToLease: a worker waits in a long-poll; the time from the submit call until the worker has
// the lease, beside a bare HTTP round trip (POST with a small JSON body to a no-op handler) on the same
// loopback, alternated iteration by iteration. Goal: p50 within 3x of the bare round trip.
func BenchmarkEnqueueToLease(b *testing.B) {
	bb := setup(b, benchConfig())
	bb.pool("p")
	w, _ := bb.worker("w", []string{"p"})
	bare := bareServer(b)
	hc := &http.Client{}
	body := []byte(`{"pool":"p","script":"echo"}`)
	bareRoundTrip := func() time.Duration {
		start := time.Now()
		resp, err := hc.Post(bare, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start)
	}
	// Warm up connections on both sides.
	for range 20 {
		bareRoundTrip()
		bb.submit(api.OperationSpec{Pool: "p"})
		l, err := w.Lease(bb.ctx, 0)
		if err != nil || l == nil {
			b.Fatal("warm-up lease failed", err)
		}
		finishBench(b, bb, w, l)
	}
	type leased struct {
		at time.Time
		l  *api.Lease
	}
	lat := make([]time.Duration, 0, b.N)
	base := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		base = append(base, bareRoundTrip())
		got := make(chan leased, 1)
		go func() {
			l, err := w.Lease(bb.ctx, 30*time.Second)
			if err != nil || l == nil {
				got <- leased{}
				return
			}
			got <- leased{time.Now(), l}
		}()
		bb.waitAsleep("the worker to wait", func(n int) bool { return n > 0 })
		start := time.Now()
		bb.submit(api.OperationSpec{Pool: "p"})
		at := <-got
		if at.l == nil {
			b.Fatal("the waiting worker got no lease")
		}
		lat = append(lat, at.at.Sub(start))
		finishBench(b, bb, w, at.l) // a worker holds at most its capacity
	}
	b.StopTimer()
	p50, bp50 := percentile(lat, 0.5), percentile(base, 0.5)
	b.ReportMetric(float64(p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(percentile(lat, 0.9).Microseconds()), "p90-us")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-us")
	b.ReportMetric(float64(bp50.Microseconds()), "bare-p50-us")
	b.ReportMetric(float64(p50)/float64(bp50), "p50-ratio")
	b.ReportMetric(0, "ns/op")
}

// benchConfig is testConfig for benchmarks: workers that never heartbeat stay available however long a run
// takes.
func benchConfig() Config {
	c := testConfig()
	c.HeartbeatInterval, c.LeaseTTL = time.Hour, 2*time.Hour
	return c
}

// finishBench ends a lease w holds (succeeded), off the clock of the latency measured.
func finishBench(b *testing.B, bb *bundle, w *client.Client, l *api.Lease) {
	if _, err := w.Result(bb.ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughput: b.N operations through submit → lease → 10 log lines (one batch) → result, with 16
// workers long-polling and 4 submitters, beside the machine's raw SQLite rate (same driver, same pragmas,
// one INSERT per transaction) measured in the same run. Goal: at least 1,000 operations/s on SQLite.
func BenchmarkThroughput(b *testing.B) {
	const workers, submitters = 16, 4
	bb := setup(b, benchConfig())
	bb.pool("p")
	var done atomic.Int64
	total := int64(b.N)
	allDone := make(chan struct{})
	ctx, cancel := context.WithCancel(bb.ctx)
	defer cancel()
	var wg sync.WaitGroup
	lines := make([]api.LogLine, 10)
	for i := range workers {
		w, _ := bb.worker(fmt.Sprintf("w%d", i), []string{"p"})
		wg.Go(func() {
			for ctx.Err() == nil {
				l, err := w.Lease(ctx, 5*time.Second)
				if err != nil || l == nil {
					continue
				}
				batch := make([]api.LogLine, len(lines))
				for j := range batch {
					batch[j] = api.LogLine{Seq: int64(j + 1), Time: time.Now(), Stream: api.StreamStdout, Text: fmt.Sprintf("line %d of the deployment step", j+1)}
				}
				if _, err := w.AppendLogs(bb.ctx, l.Operation.ID, l.LeaseID, batch); err != nil {
					b.Error(err)
					return
				}
				if _, err := w.Result(bb.ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded,
					ExitCode: intp(0), LastSeq: 10}); err != nil {
					b.Error(err)
					return
				}
				if done.Add(1) == total {
					close(allDone)
				}
			}
		})
	}
	bb.waitAsleep("every worker to wait", func(n int) bool { return n >= workers })
	rawBefore := rawSQLiteRate(b, 2000)
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var subs sync.WaitGroup
	for range submitters {
		subs.Go(func() {
			for next.Add(1) <= total {
				if _, err := bb.admin.Submit(bb.ctx, api.OperationSpec{Pool: "p", Script: "echo deploy"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	subs.Wait()
	select {
	case <-allDone:
	case <-time.After(10 * time.Minute):
		b.Fatal("operations did not finish")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	opsPerSec := float64(b.N) / elapsed.Seconds()
	raw := (rawBefore + rawSQLiteRate(b, 2000)) / 2 // before and after: the machine is shared
	b.ReportMetric(opsPerSec, "ops/s")
	b.ReportMetric(raw, "raw-sqlite-tx/s")
	b.ReportMetric(opsPerSec/raw, "ops-per-raw-tx")
	b.ReportMetric(0, "ns/op")
}

// rawSQLiteRate measures single-INSERT transactions per second on a fresh file with the store's own DSN.
func rawSQLiteRate(b *testing.B, n int) float64 {
	db, err := sql.Open("sqlite", sqlitedsn.DSN(filepath.Join(b.TempDir(), "raw.db"), true))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	ins, err := db.Prepare(`INSERT INTO t (v) VALUES (?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	start := time.Now()
	for i := range n {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Stmt(ins).Exec(fmt.Sprintf("row %d", i)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
