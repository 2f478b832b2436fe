package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/storebench"
)

// The benchmarks report ratios against a baseline measured in the same run (scripts/bench-dispatch.sh runs
// them): the machine is shared, so only ratios compare across runs. Each runs once per store driver
// (sub-benchmarks db=sqlite, db=postgres; storebench.Drivers), so the drivers' figures sit side by side.

// setupOn is setup over a fresh store of driver d.
func setupOn(b *testing.B, d storebench.Driver, cfg Config) (*bundle, *storebench.DB) {
	db := d.Open(b)
	return serveStore(b, cfg, nil, db.Store), db
}

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
func BenchmarkEnqueueToLease(b *testing.B) { storebench.Run(b, benchEnqueueToLease) }

func benchEnqueueToLease(b *testing.B, d storebench.Driver) {
	bb, _ := setupOn(b, d, benchConfig())
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
// workers long-polling and 4 submitters, beside the driver's raw rate (same database engine and settings,
// one INSERT per transaction) measured in the same run. Goal: at least 1,000 operations/s on SQLite.
func BenchmarkThroughput(b *testing.B) { storebench.Run(b, benchThroughput) }

func benchThroughput(b *testing.B, d storebench.Driver) {
	const workers, submitters = 16, 4
	bb, db := setupOn(b, d, benchConfig())
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
	rawBefore := db.RawTxRate(2000)
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
	raw := (rawBefore + db.RawTxRate(2000)) / 2 // before and after: the machine is shared
	b.ReportMetric(opsPerSec, "ops/s")
	b.ReportMetric(raw, "raw-tx/s")
	b.ReportMetric(opsPerSec/raw, "ops-per-raw-tx")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLogLines: log lines stored per second through POST .../logs, one worker sending b.N batches of
// 1,000 numbered lines (as the agent ships a busy log), a new operation every 50 batches so no log reaches
// the log limit, beside the driver's raw rate measured in the same run. lines-per-raw-tx is lines stored in
// the time of one raw one-INSERT transaction.
func BenchmarkLogLines(b *testing.B) { storebench.Run(b, benchLogLines) }

func benchLogLines(b *testing.B, d storebench.Driver) {
	const perBatch, perOp = 1000, 50
	bb, db := setupOn(b, d, benchConfig())
	bb.pool("p")
	w, _ := bb.worker("w", []string{"p"})
	raw := db.RawTxRate(2000)
	batch := make([]api.LogLine, perBatch)
	var l *api.Lease
	b.ResetTimer()
	for i := range b.N {
		if i%perOp == 0 {
			b.StopTimer()
			if l != nil {
				finishLogs(b, bb, w, l, perOp*perBatch)
			}
			bb.submit(api.OperationSpec{Pool: "p"})
			l = bb.lease(w)
			b.StartTimer()
		}
		seq := (i % perOp) * perBatch
		now := time.Now()
		for j := range batch {
			batch[j] = api.LogLine{Seq: int64(seq + j + 1), Time: now, Stream: api.StreamStdout,
				Text: fmt.Sprintf("step %d: deploying package acme.web 1.2.%d to web-%02d", seq+j+1, i, j%100)}
		}
		if _, err := w.AppendLogs(bb.ctx, l.Operation.ID, l.LeaseID, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	linesPerSec := float64(b.N*perBatch) / b.Elapsed().Seconds()
	raw = (raw + db.RawTxRate(2000)) / 2
	b.ReportMetric(linesPerSec, "lines/s")
	b.ReportMetric(raw, "raw-tx/s")
	b.ReportMetric(linesPerSec/raw, "lines-per-raw-tx")
	b.ReportMetric(0, "ns/op")
}

// finishLogs ends l (succeeded) after its last lines.
func finishLogs(b *testing.B, bb *bundle, w *client.Client, l *api.Lease, last int) {
	if _, err := w.Result(bb.ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded,
		ExitCode: intp(0), LastSeq: int64(last)}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHeartbeats: heartbeats/s a server absorbs, 64 workers heartbeating back to back (each with one
// running operation, whose lease the heartbeat renews, as a busy worker's does), beside the driver's raw
// rate measured in the same run.
func BenchmarkHeartbeats(b *testing.B) { storebench.Run(b, benchHeartbeats) }

func benchHeartbeats(b *testing.B, d storebench.Driver) {
	const workers = 64
	bb, db := setupOn(b, d, benchConfig())
	bb.pool("p")
	raw := db.RawTxRate(2000)
	reqs := make([]api.HeartbeatRequest, workers)
	ws := make([]*client.Client, workers)
	for i := range workers {
		ws[i], _ = bb.worker(fmt.Sprintf("w%d", i), []string{"p"})
		bb.submit(api.OperationSpec{Pool: "p"})
		reqs[i] = api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Running: []string{bb.lease(ws[i]).Operation.ID},
			Health: api.Health{OK: true}, Profiles: []string{}}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := ws[i].Heartbeat(bb.ctx, reqs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	perSec := float64(b.N) / b.Elapsed().Seconds()
	raw = (raw + db.RawTxRate(2000)) / 2
	b.ReportMetric(perSec, "heartbeats/s")
	b.ReportMetric(raw, "raw-tx/s")
	b.ReportMetric(perSec/raw, "per-raw-tx")
	b.ReportMetric(0, "ns/op")
}
