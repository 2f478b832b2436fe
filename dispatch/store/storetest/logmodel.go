package storetest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// modelText is line seq's text: quotes, a backslash, a tab, a non-ASCII letter and a NUL byte.
func modelText(seq int64) string {
	return fmt.Sprintf("line %d: \"quoted\" \\ tab\t né \x00 end", seq)
}

// testAppendLogsModel sends random batches (repeats, lines out of order, holes filled later, worker
// notes in between, lines repeated within a batch) to two interleaved operations and checks every reply and
// the stored logs against a plain model: each seq once, notes as they come, batch order kept, the contiguous
// end and the gap flag as defined.
func testAppendLogsModel(t *testing.T, b *bundle) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := b.s
			rng := rand.New(rand.NewPCG(seed, 99))
			type model struct {
				ref    store.LeaseRef
				held   map[int64]bool
				want   []api.LogLine // in stored order
				notes  int
				maxSeq int64
			}
			var ops []*model
			for range 2 {
				b.enqueue(t, api.OperationSpec{})
				ops = append(ops, &model{ref: ref(b.mustClaim(t, "w"), "w", b.now)})
			}
			base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			for step := 0; step < 200; step++ {
				m := ops[rng.IntN(len(ops))]
				if m.held == nil {
					m.held = map[int64]bool{}
				}
				var batch []api.LogLine
				start := max(1, m.maxSeq-int64(rng.IntN(20)))
				for k := rng.IntN(40); k >= 0; k-- {
					var seq int64
					switch r := rng.IntN(10); {
					case r == 0:
						seq = 0 // a worker note
					case r < 3:
						seq = 1 + rng.Int64N(m.maxSeq+30) // anywhere, maybe far ahead
					default:
						seq = start // mostly in order
						start++
					}
					text := modelText(seq)
					if seq == 0 {
						text = fmt.Sprintf("note %d", m.notes)
						m.notes++
					}
					batch = append(batch, api.LogLine{Seq: seq, Time: base.Add(time.Duration(seq) * time.Microsecond), Stream: api.StreamStdout, Text: text})
				}
				for _, l := range batch {
					if l.Seq == 0 || !m.held[l.Seq] {
						m.want = append(m.want, l)
						m.held[l.Seq] = l.Seq > 0
						m.maxSeq = max(m.maxSeq, l.Seq)
					}
				}
				var last int64
				for m.held[last+1] {
					last++
				}
				gap := false
				for seq := range m.held {
					gap = gap || seq > last
				}
				resp, err := s.AppendLogs(t.Context(), m.ref, batch)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				resp.Stored, resp.StoredBytes = 0, 0 // storetest checks them
				if want := (api.AppendLogsResponse{LastSeq: last, Gap: gap}); resp != want {
					t.Fatalf("step %d: AppendLogs = %+v, want %+v", step, resp, want)
				}
			}
			for _, m := range ops {
				all, err := s.Logs(t.Context(), m.ref.OperationID, 0, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				strip := func(ls []api.LogLine) []api.LogLine {
					out := make([]api.LogLine, len(ls))
					for i, l := range ls {
						l.Pos = 0
						out[i] = l
					}
					return out
				}
				if diff := cmp.Diff(m.want, strip(all)); diff != "" {
					t.Fatalf("operation %s: stored log (-want +got):\n%s", m.ref.OperationID, diff)
				}
				// From any cursor, in pages of any size, the rest of the log comes back in position order.
				for range 20 {
					i := rng.IntN(len(all))
					after := int64(0)
					if i > 0 {
						after = all[i-1].Pos
					}
					var got []api.LogLine
					for {
						page, err := s.Logs(t.Context(), m.ref.OperationID, after, 1+rng.IntN(9))
						if err != nil {
							t.Fatal(err)
						}
						if len(page) == 0 {
							break
						}
						got = append(got, page...)
						after = page[len(page)-1].Pos
					}
					if diff := cmp.Diff(all[i:], got); diff != "" {
						t.Fatalf("operation %s after pos %d (-want +got):\n%s", m.ref.OperationID, all[i].Pos-1, diff)
					}
				}
			}
		})
	}
}
