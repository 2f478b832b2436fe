package sqlite

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// The SQLite driver's own benchmark: the file's size over a long run. The store's hot statements are
// measured on every driver, side by side, in dispatch/store/storebench.

func benchStore(b *testing.B) *Store {
	s, err := Open(b.Context(), b.TempDir()+"/bench.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.CreatePool(b.Context(), api.Pool{Name: "p", CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	ensureWorker(b, s, "w") // leases go to existing workers only
	return s
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
