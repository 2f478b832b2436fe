package storetest

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testAppendLogs(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	r := ref(l, "w", b.now)
	line := func(seq int64) api.LogLine {
		return api.LogLine{Seq: seq, Time: b.now.Add(time.Duration(seq) * time.Millisecond), Stream: api.StreamStdout, Text: fmt.Sprintf("line %d", seq)}
	}
	note := api.LogLine{Seq: 0, Time: b.now, Stream: api.StreamSystem, Text: "waiting for capacity"}
	steps := []struct {
		lines []api.LogLine
		want  api.AppendLogsResponse
	}{
		{[]api.LogLine{line(1), line(2)}, api.AppendLogsResponse{LastSeq: 2}},
		{[]api.LogLine{line(1), line(2)}, api.AppendLogsResponse{LastSeq: 2}},          // a retried batch
		{[]api.LogLine{line(5), note}, api.AppendLogsResponse{LastSeq: 2, Gap: true}},  // 3 and 4 missing
		{[]api.LogLine{line(3), note}, api.AppendLogsResponse{LastSeq: 3, Gap: true}},  // 4 still missing
		{[]api.LogLine{line(4), line(5), line(6)}, api.AppendLogsResponse{LastSeq: 6}}, // filled, 5 again
		{nil, api.AppendLogsResponse{LastSeq: 6}},                                      // an empty batch asks where we are
		{[]api.LogLine{line(3), line(2), line(7)}, api.AppendLogsResponse{LastSeq: 7}}, // old lines again, one new
	}
	stored := [][2]int64{{2, 12}, {0, 0}, {2, 26}, {2, 26}, {2, 12}, {0, 0}, {1, 6}} // lines and text bytes kept, per step
	for i, st := range steps {
		got, err := b.s.AppendLogs(b.ctx, r, st.lines)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if kept := [2]int64{int64(got.Stored), got.StoredBytes}; kept != stored[i] {
			t.Errorf("step %d: stored %v lines and bytes, want %v", i, kept, stored[i])
		}
		got.Stored, got.StoredBytes = 0, 0
		if got != st.want {
			t.Errorf("step %d: AppendLogs = %+v, want %+v", i, got, st.want)
		}
	}
	lines, err := b.s.Logs(b.ctx, l.Operation.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	notes := 0
	for i, ln := range lines {
		if i > 0 && ln.Pos <= lines[i-1].Pos {
			t.Errorf("positions not increasing: %d after %d", ln.Pos, lines[i-1].Pos)
		}
		if ln.Seq == 0 {
			notes++
			continue
		}
		seqs = append(seqs, ln.Seq)
		if ln.Text != fmt.Sprintf("line %d", ln.Seq) || !ln.Time.Equal(line(ln.Seq).Time) || ln.Stream != api.StreamStdout {
			t.Errorf("stored line %+v does not match what was sent", ln)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if diff := cmp.Diff([]int64{1, 2, 3, 4, 5, 6, 7}, seqs); diff != "" {
		t.Errorf("each seq must be stored once (-want +got):\n%s", diff)
	}
	if notes != 2 {
		t.Errorf("%d worker notes stored, want 2 (seq 0 lines are appended as they come)", notes)
	}
	// Resuming from a cursor returns only what follows it.
	rest, err := b.s.Logs(b.ctx, l.Operation.ID, lines[3].Pos, 2)
	if err != nil || len(rest) != 2 || rest[0].Pos != lines[4].Pos {
		t.Errorf("Logs(after %d, 2) = %+v, %v", lines[3].Pos, rest, err)
	}
	if leases, err := b.s.Leases(b.ctx, "w", b.now); err != nil || len(leases) != 1 || leases[0].LastSeq != 7 {
		t.Errorf("Leases = %+v, %v; want last_seq 7", leases, err)
	}
}

// testAppendLogsConflict: a batch that repeats a stored seq with another text (or stream) is refused whole,
// naming the first such seq, and stores nothing; a batch that repeats stored lines as they are stays a retry.
func testAppendLogsConflict(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	r := ref(l, "w", b.now)
	line := func(seq int64, text string) api.LogLine {
		return api.LogLine{Seq: seq, Time: b.now, Stream: api.StreamStdout, Text: text}
	}
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{line(1, "one"), line(2, "two"), line(3, "three")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{line(6, "six")}); err != nil { // a run beyond a gap
		t.Fatal(err)
	}
	other := line(2, "two")
	other.Stream = api.StreamStderr
	tests := []struct {
		name  string
		lines []api.LogLine
		seq   int64
		index int
	}{
		{"other text in the contiguous part", []api.LogLine{line(3, "three"), line(4, "four"), line(2, "TWO")}, 2, 2},
		{"other stream", []api.LogLine{other}, 2, 0},
		{"other text in a run beyond the gap", []api.LogLine{line(4, "four"), line(5, "five"), line(6, "SIX")}, 6, 2},
	}
	for _, tt := range tests {
		_, err := b.s.AppendLogs(b.ctx, r, tt.lines)
		var conflict *store.LogConflictError
		if !errors.As(err, &conflict) || conflict.Seq != tt.seq || conflict.Index != tt.index {
			t.Errorf("%s: AppendLogs = %v; want a *store.LogConflictError at seq %d, index %d", tt.name, err, tt.seq, tt.index)
		}
	}
	got, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{line(1, "one"), line(2, "two"), line(3, "three"), line(6, "six")})
	if err != nil || got != (api.AppendLogsResponse{LastSeq: 3, Gap: true}) {
		t.Fatalf("an identical re-send = %+v, %v; want it accepted, nothing new stored", got, err)
	}
	lines, err := b.s.Logs(b.ctx, l.Operation.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, ln := range lines {
		texts = append(texts, ln.Text)
	}
	if diff := cmp.Diff([]string{"one", "two", "three", "six"}, texts); diff != "" {
		t.Errorf("refused batches stored lines (-want +got):\n%s", diff)
	}
}
