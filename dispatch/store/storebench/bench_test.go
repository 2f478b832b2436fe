package storebench

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// The store's hot statements, one transaction each, on every driver (sub-benchmarks db=<driver>), each beside
// its driver's raw one-INSERT transaction measured in the same run (per-raw-tx: how many raw transactions
// the time of one store call would have allowed). The log benchmarks report ns/line and lines/s.

// benchStore opens a fresh store of d with pool p and workers w, w0..w15 (leases go to existing workers only).
func benchStore(b *testing.B, d Driver) (store.Store, *DB) {
	db := d.Open(b)
	prepare(b, db.Store, 100)
	return db.Store, db
}

// prepare creates pool p and workers w, w0..w15 of capacity capacity in s.
func prepare(tb testing.TB, s store.Store, capacity int) {
	if err := s.CreatePool(tb.Context(), api.Pool{Name: "p", CreatedAt: time.Now()}); err != nil {
		tb.Fatal(err)
	}
	for i := -1; i < 16; i++ {
		id := "w"
		if i >= 0 {
			id = fmt.Sprintf("w%d", i)
		}
		now := time.Now()
		if err := s.CreateWorker(tb.Context(), store.Worker{Worker: api.Worker{ID: id, Name: id, Pools: []string{"p"}, Version: "1",
			Capacity: capacity, Healthy: true, RegisteredAt: now, LastHeartbeat: now, Capabilities: []string{}},
			TokenHash: []byte("hash-" + id), TokenID: "t"}); err != nil {
			tb.Fatalf("registering worker %s: %v", id, err)
		}
	}
}

// perRaw reports the time of one call (ns/op) against the driver's raw transaction rate, measured after the
// benchmark's loop.
func perRaw(b *testing.B, db *DB) {
	b.StopTimer()
	raw := db.RawTxRate(1000)
	b.ReportMetric(raw, "raw-tx/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*raw/1e9, "per-raw-tx")
}

// benchSpecs are the operations the benchmarks enqueue: one without and one with a sensitive variable (whose
// end erases the value from disk).
var benchSpecs = []struct {
	name string
	spec api.OperationSpec
}{
	{"plain", api.OperationSpec{Pool: "p", Script: "echo deploy"}},
	{"secret", api.OperationSpec{Pool: "p", Script: "echo deploy",
		Variables: []api.Variable{{Name: "TOKEN", Value: "a-sensitive-value-0123456789", Sensitive: true}}}},
}

func BenchmarkCreateOperation(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		s, db := benchStore(b, d)
		b.ResetTimer()
		for i := range b.N {
			if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
				Spec: benchSpecs[0].spec, CreatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
		}
		perRaw(b, db)
	})
}

func BenchmarkClaim(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		s, db := benchStore(b, d)
		for i := range b.N {
			if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
				Spec: benchSpecs[0].spec, CreatedAt: time.Now()}); err != nil {
				b.Fatal(err)
			}
		}
		now := time.Now()
		zero := 0
		b.ResetTimer()
		for i := range b.N {
			l, err := s.Claim(b.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: fmt.Sprint(i),
				LeaseID: fmt.Sprintf("l-%d", i), Now: now, ExpiresAt: now.Add(time.Minute)})
			if err != nil || l == nil {
				b.Fatal("claim found nothing", err)
			}
			// A worker holds at most its capacity: end the operation, off the clock.
			b.StopTimer()
			if _, _, err := s.Finish(b.Context(), store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "w", Now: now},
				store.Result{State: api.StateSucceeded, ExitCode: &zero}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		perRaw(b, db)
	})
}

// BenchmarkOperationLife: an operation's whole life, one write after the other as the server makes them:
// enqueue, claim, running, 10 log lines, succeeded; with and without a sensitive variable.
func BenchmarkOperationLife(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		for _, c := range benchSpecs {
			b.Run(c.name, func(b *testing.B) {
				s, db := benchStore(b, d)
				lines := make([]api.LogLine, 10)
				b.ResetTimer()
				for i := range b.N {
					ref := enqueueAndClaim(b, s, c.spec, fmt.Sprintf("op-%d", i), "w")
					if _, err := s.SetRunning(b.Context(), ref, ""); err != nil {
						b.Fatal(err)
					}
					benchLines(lines, 1)
					if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
						b.Fatal(err)
					}
					finish(b, s, ref, 10)
				}
				perRaw(b, db)
			})
		}
	})
}

// enqueueAndClaim creates operation id of spec and leases it to worker.
func enqueueAndClaim(tb testing.TB, s store.Store, spec api.OperationSpec, id, worker string) store.LeaseRef {
	now := time.Now()
	if _, err := s.CreateOperation(tb.Context(), store.NewOperation{ID: id, Spec: spec, CreatedAt: now}); err != nil {
		tb.Fatal(err)
	}
	l, err := s.Claim(tb.Context(), store.ClaimParams{WorkerID: worker, Pools: []string{"p"}, RequestID: id,
		LeaseID: "l-" + id, Now: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil || l == nil {
		tb.Fatal("claim found nothing", err)
	}
	return store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: worker, Now: now}
}

// finish ends ref's operation, succeeded after last log lines.
func finish(tb testing.TB, s store.Store, ref store.LeaseRef, last int64) {
	exit := 0
	if _, _, err := s.Finish(tb.Context(), ref, store.Result{State: api.StateSucceeded, ExitCode: &exit, LastSeq: last}); err != nil {
		tb.Fatal(err)
	}
}

func BenchmarkCreateLeasedOperation(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		s, db := benchStore(b, d)
		now := time.Now()
		b.ResetTimer()
		for i := range b.N {
			worker := fmt.Sprintf("w%d", i%16)
			l, err := s.CreateLeasedOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
				Spec: benchSpecs[0].spec, CreatedAt: now},
				store.ClaimParams{WorkerID: worker, RequestID: fmt.Sprint(i), LeaseID: fmt.Sprint(i), Now: now, ExpiresAt: now.Add(time.Minute)})
			if err != nil || l == nil {
				b.Fatal("hand-off refused", err)
			}
			b.StopTimer() // a worker holds at most its capacity: end the operation, off the clock
			finish(b, s, store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: worker, Now: now}, 0)
			b.StartTimer()
		}
		perRaw(b, db)
	})
}

// benchLines fills lines with numbered lines from seq on, texts as short as `seq N` prints.
func benchLines(lines []api.LogLine, seq int) {
	now := time.Now()
	for j := range lines {
		lines[j] = api.LogLine{Seq: int64(seq + j), Time: now, Stream: api.StreamStdout, Text: strconv.Itoa(seq + j)}
	}
}

// BenchmarkAppendLogs: batches of 10 lines (a quiet step) and of 5,000 (the server's limit, a busy log).
func BenchmarkAppendLogs(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		for _, n := range []int{10, api.MaxLogLines} {
			b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
				s, db := benchStore(b, d)
				ref := enqueueAndClaim(b, s, benchSpecs[0].spec, "op", "w")
				lines := make([]api.LogLine, n)
				i := 0
				for b.Loop() {
					b.StopTimer()
					benchLines(lines, i*n+1)
					b.StartTimer()
					if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
						b.Fatal(err)
					}
					i++
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "lines/s")
				perRaw(b, db)
			})
		}
	})
}

// BenchmarkLogs: reading a 20,000-line log in pages of 5,000 lines, as a follower does.
func BenchmarkLogs(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		s, _ := benchStore(b, d)
		ref := enqueueAndClaim(b, s, benchSpecs[0].spec, "op", "w")
		lines := make([]api.LogLine, 5000)
		for i := range 4 {
			benchLines(lines, i*5000+1)
			if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			after, n := int64(0), 0
			for {
				page, err := s.Logs(b.Context(), "op", after, 5000)
				if err != nil {
					b.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				n += len(page)
				after = page[len(page)-1].Pos
			}
			if n != 20000 {
				b.Fatalf("read %d lines, want 20000", n)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20000), "ns/line")
	})
}
