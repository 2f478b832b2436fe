package storebench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// BenchmarkWrites measures what each step of an operation's life writes, per step, for the capacity model
// in ARCHITECTURE.md: b.N operations go through each step in turn (enqueue, lease, status running, a batch
// of 10 log lines, a heartbeat renewing the lease, the result), and the database's counters (Counters) are
// read around each step, with the store reopened so that all of its writes are counted. It reports, per
// step, bytes written and writes (SQLite: write calls; PostgreSQL: rows written) per call, and logs the
// table. Run it with -benchtime 1000x: each iteration is one operation.
func BenchmarkWrites(b *testing.B) {
	Run(b, func(b *testing.B, d Driver) {
		db := d.Open(b)
		prepare(b, db.Store, b.N+1)
		lines := make([]api.LogLine, 10)
		zero := 0
		refs := make([]store.LeaseRef, b.N)
		steps := []struct {
			name string
			do   func(i int) error
		}{
			{"enqueue", func(i int) error {
				_, err := db.Store.CreateOperation(b.Context(), store.NewOperation{ID: fmt.Sprintf("op-%d", i), Spec: benchSpecs[0].spec, CreatedAt: time.Now()})
				return err
			}},
			{"lease", func(i int) error {
				now := time.Now()
				l, err := db.Store.Claim(b.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: fmt.Sprint(i),
					LeaseID: fmt.Sprintf("l-%d", i), Now: now, ExpiresAt: now.Add(time.Hour), LogLimit: api.DefaultLogLimit})
				if err == nil && l == nil {
					err = fmt.Errorf("claim %d found nothing", i)
				}
				if err == nil {
					refs[i] = store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "w", Now: now}
				}
				return err
			}},
			{"status", func(i int) error { _, err := db.Store.SetRunning(b.Context(), refs[i], ""); return err }},
			{"logs10", func(i int) error {
				benchLines(lines, 1)
				for j := range lines {
					lines[j].Text = fmt.Sprintf("step %d: deploying package acme.web 1.2.%d to web-%02d", j+1, i, j)
				}
				_, err := db.Store.AppendLogs(b.Context(), refs[i], lines)
				return err
			}},
			{"heartbeat", func(i int) error {
				now := time.Now()
				_, err := db.Store.Heartbeat(b.Context(), store.Heartbeat{WorkerID: "w", Now: now, LeaseExpiresAt: now.Add(time.Hour),
					HeartbeatRequest: api.HeartbeatRequest{Version: "1", Capacity: b.N + 1, Running: []string{refs[i].OperationID},
						Health: api.Health{OK: true, CheckedAt: now}}})
				return err
			}},
			{"result", func(i int) error {
				_, _, err := db.Store.Finish(b.Context(), refs[i], store.Result{State: api.StateSucceeded, ExitCode: &zero, LastSeq: 10})
				return err
			}},
		}
		var table strings.Builder
		fmt.Fprintf(&table, "db=%s, per call, over %d calls:\n%-10s %10s %8s %8s %8s %8s\n", d.Name, b.N, "step", "bytes", "calls", "rows", "commits", "us")
		var total Counters
		db.Reopen()
		before := db.Counters()
		for _, st := range steps {
			start := time.Now()
			for i := range b.N {
				if err := st.do(i); err != nil {
					b.Fatalf("%s: %v", st.name, err)
				}
			}
			took := time.Since(start)
			db.Reopen()
			after := db.Counters()
			n := float64(b.N)
			c := Counters{Bytes: (after.Bytes - before.Bytes) / n, Calls: (after.Calls - before.Calls) / n,
				Rows: (after.Rows - before.Rows) / n, Commits: (after.Commits - before.Commits) / n}
			fmt.Fprintf(&table, "%-10s %10.0f %8.1f %8.1f %8.2f %8.0f\n", st.name, c.Bytes, c.Calls, c.Rows, c.Commits, float64(took.Microseconds())/n)
			b.ReportMetric(c.Bytes, st.name+"-B")
			total.Bytes += c.Bytes
			total.Rows += c.Rows
			before = after
		}
		b.ReportMetric(total.Bytes, "total-B")
		if total.Rows > 0 {
			b.ReportMetric(total.Rows, "total-rows")
		}
		b.ReportMetric(0, "ns/op")
		b.Log("\n" + table.String())
	})
}
