package sqlite

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// The store's hot statements, one transaction each, beside a raw one-INSERT transaction on the same file
// and settings (BenchmarkRawInsertTx). The log benchmarks also report ns/line.

func benchStore(b *testing.B) *Store {
	s, err := Open(b.Context(), b.TempDir()+"/bench.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.CreatePool(b.Context(), api.Pool{Name: "p", CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	// Leases go to existing workers only: "w", and "w0".."w15" for the hand-offs.
	ensureWorker(b, s, "w")
	for i := range 16 {
		ensureWorker(b, s, fmt.Sprintf("w%d", i))
	}
	return s
}

func BenchmarkRawInsertTx(b *testing.B) {
	s := benchStore(b)
	if _, err := s.w.Exec(`CREATE TABLE raw (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	ins, err := s.w.Prepare(`INSERT INTO raw (v) VALUES (?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	b.ResetTimer()
	for i := range b.N {
		tx, err := s.w.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Stmt(ins).Exec(fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSpecs are the operations the benchmarks enqueue: one without and one with a sensitive variable (whose
// end erases the value: secure_delete zeroes it and the WAL is truncated soon after).
var benchSpecs = []struct {
	name string
	spec api.OperationSpec
}{
	{"plain", api.OperationSpec{Pool: "p", Script: "echo deploy"}},
	{"secret", api.OperationSpec{Pool: "p", Script: "echo deploy",
		Variables: []api.Variable{{Name: "TOKEN", Value: "a-sensitive-value-0123456789", Sensitive: true}}}},
}

func BenchmarkCreateOperation(b *testing.B) {
	for _, c := range benchSpecs {
		b.Run(c.name, func(b *testing.B) {
			s := benchStore(b)
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
					Spec: c.spec, CreatedAt: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkClaim(b *testing.B) {
	for _, c := range benchSpecs {
		b.Run(c.name, func(b *testing.B) {
			s := benchStore(b)
			for i := range b.N {
				if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
					Spec: c.spec, CreatedAt: time.Now()}); err != nil {
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
					b.Fatal(err)
				}
				// A worker holds at most its capacity: end the operation, off the clock.
				b.StopTimer()
				if _, _, err := s.Finish(b.Context(), store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "w", Now: now},
					store.Result{State: api.StateSucceeded, ExitCode: &zero}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkOperationLife: an operation's whole life, one write after the other as the server makes them:
// enqueue, claim, running, 10 log lines, succeeded.
func BenchmarkOperationLife(b *testing.B) {
	for _, c := range benchSpecs {
		b.Run(c.name, func(b *testing.B) {
			s := benchStore(b)
			lines := make([]api.LogLine, 10)
			exit := 0
			b.ResetTimer()
			for i := range b.N {
				now := time.Now()
				id := fmt.Sprintf("op-%d", i)
				if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: id, Spec: c.spec, CreatedAt: now}); err != nil {
					b.Fatal(err)
				}
				l, err := s.Claim(b.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: id,
					LeaseID: "l-" + id, Now: now, ExpiresAt: now.Add(time.Minute)})
				if err != nil || l == nil {
					b.Fatal(err)
				}
				ref := store.LeaseRef{OperationID: id, LeaseID: l.LeaseID, WorkerID: "w", Now: now}
				if _, err := s.SetRunning(b.Context(), ref, ""); err != nil {
					b.Fatal(err)
				}
				benchLines(lines, 1)
				if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
					b.Fatal(err)
				}
				if _, _, err := s.Finish(b.Context(), ref, store.Result{State: api.StateSucceeded, ExitCode: &exit, LastSeq: 10}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendLogs10(b *testing.B) {
	s := benchStore(b)
	ref := leasedBench(b, s)
	lines := make([]api.LogLine, 10)
	b.ResetTimer()
	for i := range b.N {
		for j := range lines {
			lines[j] = api.LogLine{Seq: int64(i*10 + j + 1), Time: ref.Now, Stream: "stdout", Text: "a line of deployment output"}
		}
		if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateLeasedOperation(b *testing.B) {
	s := benchStore(b)
	now := time.Now()
	zero := 0
	b.ResetTimer()
	for i := range b.N {
		worker := fmt.Sprintf("w%d", i%16)
		l, err := s.CreateLeasedOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i),
			Spec: api.OperationSpec{Pool: "p", Script: "echo deploy"}, CreatedAt: now},
			store.ClaimParams{WorkerID: worker, RequestID: fmt.Sprint(i), LeaseID: fmt.Sprint(i), Now: now, ExpiresAt: now.Add(time.Minute)})
		if err != nil || l == nil {
			b.Fatal("hand-off refused", err)
		}
		// A worker holds at most its capacity: end the operation, off the clock.
		b.StopTimer()
		if _, _, err := s.Finish(b.Context(), store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: worker, Now: now},
			store.Result{State: api.StateSucceeded, ExitCode: &zero}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// leasedBench creates an operation and leases it for the log benchmarks.
func leasedBench(b *testing.B, s *Store) store.LeaseRef {
	if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: "op", Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	l, err := s.Claim(b.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l", Now: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	return store.LeaseRef{OperationID: "op", LeaseID: l.LeaseID, WorkerID: "w", Now: now}
}

// benchLines fills lines with numbered lines from seq on, texts as short as `seq N` prints.
func benchLines(lines []api.LogLine, seq int) {
	now := time.Now()
	for j := range lines {
		lines[j] = api.LogLine{Seq: int64(seq + j), Time: now, Stream: api.StreamStdout, Text: strconv.Itoa(seq + j)}
	}
}

// BenchmarkAppendLogs5000: a full batch (the server's limit), as the worker sends a busy log.
func BenchmarkAppendLogs5000(b *testing.B) {
	s := benchStore(b)
	ref := leasedBench(b, s)
	batches := make([][]api.LogLine, 64)
	for i := range batches {
		batches[i] = make([]api.LogLine, 5000)
	}
	i := 0
	for b.Loop() {
		lines := batches[i%len(batches)]
		b.StopTimer()
		benchLines(lines, i*5000+1)
		b.StartTimer()
		if _, err := s.AppendLogs(b.Context(), ref, lines); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/line")
}

// BenchmarkLogs: reading a 20,000-line log in pages of 5,000 lines, as a follower does.
func BenchmarkLogs(b *testing.B) {
	s := benchStore(b)
	ref := leasedBench(b, s)
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
}

// BenchmarkFileSize runs 2,000 operations of 50 log lines, one per simulated minute (33 hours), and reports the
// size of the database file (in MB, with the WAL truncated into it) after 10% and after all of them: without
// retention, and with a retention of 2 hours run every simulated hour as the server runs it. Run it with
// -benchtime=1x: each iteration is the whole run.
func BenchmarkFileSize(b *testing.B) {
	const ops, lines = 2000, 50
	for _, c := range []struct {
		name string
		keep time.Duration // 0: no retention
	}{{"keep-all", 0}, {"retention-2h", 2 * time.Hour}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := benchStore(b)
				var path string
				if err := s.r.QueryRow(`SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				batch := make([]api.LogLine, lines)
				start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
				exit := 0
				var at10 float64
				for i := range ops {
					now := start.Add(time.Duration(i) * time.Minute)
					id := fmt.Sprintf("op-%d", i)
					if _, err := s.CreateOperation(b.Context(), store.NewOperation{ID: id, Spec: benchSpecs[1].spec, CreatedAt: now}); err != nil {
						b.Fatal(err)
					}
					l, err := s.Claim(b.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "l-" + id, Now: now, ExpiresAt: now.Add(time.Hour)})
					if err != nil || l == nil {
						b.Fatal(err)
					}
					ref := store.LeaseRef{OperationID: id, LeaseID: l.LeaseID, WorkerID: "w", Now: now}
					for j := range batch {
						batch[j] = api.LogLine{Seq: int64(j + 1), Time: now, Stream: api.StreamStdout,
							Text: fmt.Sprintf("step %d of %s: deploying package acme.web 1.2.%d to web-%02d", j+1, id, i, j)}
					}
					if _, err := s.AppendLogs(b.Context(), ref, batch); err != nil {
						b.Fatal(err)
					}
					if _, _, err := s.Finish(b.Context(), ref, store.Result{State: api.StateSucceeded, ExitCode: &exit, LastSeq: lines}); err != nil {
						b.Fatal(err)
					}
					if c.keep > 0 && (i+1)%60 == 0 {
						if _, err := s.DeleteFinished(b.Context(), now.Add(-c.keep), 500); err != nil {
							b.Fatal(err)
						}
					}
					if i+1 == ops/10 {
						at10 = fileMB(b, s, path)
					}
				}
				b.ReportMetric(at10, "MB@10%")
				b.ReportMetric(fileMB(b, s, path), "MB@100%")
			}
		})
	}
}

// fileMB is the size of the database file at path in MB, after a WAL truncation (which the store runs within
// truncateDelay of every operation's end anyway), so the pages in the WAL are counted once, in the file.
func fileMB(b *testing.B, s *Store, path string) float64 {
	b.StopTimer()
	defer b.StartTimer()
	if !s.truncateWAL() {
		b.Fatal("truncating the WAL did not complete")
	}
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return float64(info.Size()) / (1 << 20)
}
