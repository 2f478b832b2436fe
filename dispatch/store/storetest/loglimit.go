package storetest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// logLimitCase is an operation leased with a small log limit, the lines sent to it, and checks of what the
// store keeps.
type logLimitCase struct {
	b     *bundle
	r     store.LeaseRef
	id    string
	limit int64
	sent  map[int64]api.LogLine // numbered lines sent, by seq
	notes []api.LogLine         // seq 0 lines sent
	batch int64                 // bytes of the largest batch sent
}

func newLogLimitCase(t *testing.T, b *bundle, limit int64) *logLimitCase {
	t.Helper()
	b.enqueue(t, api.OperationSpec{})
	b.registerWorker(t, "w")
	l, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: b.id("lease"), Now: b.now,
		ExpiresAt: b.now.Add(time.Hour), LogLimit: limit})
	if err != nil || l == nil {
		t.Fatalf("Claim = %v, %v; want a lease", l, err)
	}
	return &logLimitCase{b: b, r: ref(l, "w", b.now), id: l.Operation.ID, limit: limit, sent: map[int64]api.LogLine{}}
}

func (c *logLimitCase) line(seq int64) api.LogLine {
	return api.LogLine{Seq: seq, Time: c.b.now.Add(time.Duration(seq) * time.Millisecond), Stream: api.StreamStdout,
		Text: fmt.Sprintf("line %06d %s", seq, strings.Repeat("x", 80))}
}

// send appends lines first..last (and note, when set, in the middle) and checks the reply.
func (c *logLimitCase) send(t *testing.T, first, last int64, note string, want api.AppendLogsResponse) {
	t.Helper()
	var batch []api.LogLine
	var size int64
	for s := first; s <= last; s++ {
		l := c.line(s)
		if note != "" && s == (first+last)/2 {
			n := api.LogLine{Time: l.Time, Stream: api.StreamSystem, Text: note}
			batch, size = append(batch, n), size+store.LogLineBytes(n)
			c.notes = append(c.notes, n)
		}
		batch, size = append(batch, l), size+store.LogLineBytes(l)
		c.sent[s] = l
	}
	c.batch = max(c.batch, size)
	got, err := c.b.s.AppendLogs(c.b.ctx, c.r, batch)
	got.Stored, got.StoredBytes = 0, 0 // what the metrics count: the logs cases check what is stored
	if err != nil || got != want {
		t.Fatalf("AppendLogs(%d..%d) = %+v, %v; want %+v", first, last, got, err, want)
	}
}

// logView is an operation's stored log, taken apart.
type logView struct {
	all        []api.LogLine // in position order
	markers    []api.LogLine
	notes      []api.LogLine // seq 0 lines but the markers
	head, tail []api.LogLine // the numbered lines 1, 2, ... h, and those after, in seq order
}

func (c *logLimitCase) view(t *testing.T) logView {
	t.Helper()
	all, err := c.b.s.Logs(c.b.ctx, c.id, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	v := logView{all: all}
	var numbered []api.LogLine
	for _, l := range all {
		switch {
		case l.Seq == 0 && strings.HasPrefix(l.Text, "… "):
			v.markers = append(v.markers, l)
		case l.Seq == 0:
			v.notes = append(v.notes, l)
		default:
			numbered = append(numbered, l)
		}
	}
	sort.Slice(numbered, func(i, j int) bool { return numbered[i].Seq < numbered[j].Seq })
	h := 0
	for h < len(numbered) && numbered[h].Seq == int64(h+1) {
		h++
	}
	v.head, v.tail = numbered[:h], numbered[h:]
	return v
}

// check verifies the rules of a cut log whose contiguous end is last: the head (seqs from 1, with the notes
// among them at least half the limit, at most one batch more), one marker whose counts are exactly what is
// missing, the tail contiguous up to last, and the bytes kept within the limit plus one batch. When inOrder
// (lines were sent in seq order), positions go head < marker < tail.
func (c *logLimitCase) check(t *testing.T, step string, last int64, inOrder bool) {
	t.Helper()
	v := c.view(t)
	if len(v.markers) != 1 {
		t.Fatalf("%s: %d cut markers stored, want 1", step, len(v.markers))
	}
	m := v.markers[0]
	if len(v.head) == 0 || len(v.tail) == 0 || v.tail[len(v.tail)-1].Seq != last {
		t.Fatalf("%s: %d head lines, %d tail lines; want both, the tail up to seq %d", step, len(v.head), len(v.tail), last)
	}
	kept := map[int64]bool{}
	var head, stored int64
	for i, l := range append(append([]api.LogLine{}, v.head...), v.tail...) {
		kept[l.Seq] = true
		stored += store.LogLineBytes(l)
		if sent := c.sent[l.Seq]; l.Text != sent.Text || l.Stream != sent.Stream || !l.Time.Equal(sent.Time) {
			t.Fatalf("%s: stored line %+v is not the one sent", step, l)
		}
		if i < len(v.head) {
			head += store.LogLineBytes(l)
		} else if j := i - len(v.head); j > 0 && l.Seq != v.tail[j-1].Seq+1 {
			t.Fatalf("%s: tail seq %d follows %d: the tail must be contiguous", step, l.Seq, v.tail[j-1].Seq)
		}
	}
	keptNotes := map[string]bool{}
	for _, n := range v.notes {
		keptNotes[n.Text] = true
		stored += store.LogLineBytes(n)
		if n.Pos < v.head[len(v.head)-1].Pos {
			head += store.LogLineBytes(n)
		}
	}
	if head < c.limit/2 || head > c.limit/2+c.batch {
		t.Errorf("%s: head holds %d bytes (seqs 1..%d); want half the limit (%d) up to one batch (%d) more", step, head,
			len(v.head), c.limit/2, c.batch)
	}
	if inOrder && (v.head[len(v.head)-1].Pos >= m.Pos || m.Pos >= v.tail[0].Pos) {
		t.Errorf("%s: marker at %d is not between the head (ends at %d) and the tail (starts at %d)", step, m.Pos,
			v.head[len(v.head)-1].Pos, v.tail[0].Pos)
	}
	if m.Stream != api.StreamSystem {
		t.Errorf("%s: marker on stream %q, want %q", step, m.Stream, api.StreamSystem)
	}
	var lines, bytes int64
	for s, l := range c.sent {
		if s <= last && !kept[s] {
			lines, bytes = lines+1, bytes+store.LogLineBytes(l)
		}
	}
	for _, n := range c.notes {
		if !keptNotes[n.Text] {
			lines, bytes = lines+1, bytes+store.LogLineBytes(n)
		}
	}
	if want := store.CutMarker(lines, bytes, c.limit); m.Text != want {
		t.Errorf("%s: marker %q, want %q", step, m.Text, want)
	}
	if stored > c.limit+c.batch {
		t.Errorf("%s: %d bytes stored, over the limit %d plus one batch (%d)", step, stored, c.limit, c.batch)
	}
}

// testLogLimit: past its limit a log keeps its head and its tail and one marker line in between that counts
// exactly what was dropped, as the tail rolls; the contiguous end and exactly-once hold across the cut.
func testLogLimit(t *testing.T, b *bundle) {
	c := newLogLimitCase(t, b, 16<<10)
	const per = 5
	var last, sent int64
	for last < 1000 {
		note := ""
		if last%100 == 50 {
			note = fmt.Sprintf("note after %d", last)
		}
		c.send(t, last+1, last+per, note, api.AppendLogsResponse{LastSeq: last + per})
		last += per
		sent += c.batch
		if v := c.view(t); len(v.markers) > 0 || sent > c.limit+c.batch {
			c.check(t, fmt.Sprintf("after seq %d", last), last, true)
		}
	}
	v := c.view(t)
	if len(v.tail) < 50 || v.head[len(v.head)-1].Seq > 100 {
		t.Fatalf("head 1..%d, tail from %d: want the middle dropped", v.head[len(v.head)-1].Seq, v.tail[0].Seq)
	}
	// Re-sending dropped and kept lines is a retry: nothing is stored, nothing asked for.
	before := v.all
	dropped, keptSeq := v.head[len(v.head)-1].Seq+1, v.tail[len(v.tail)-3].Seq
	resend := []api.LogLine{c.line(dropped), c.line(dropped + 1), c.line(keptSeq), c.line(keptSeq + 1), c.line(last)}
	if got, err := b.s.AppendLogs(b.ctx, c.r, resend); err != nil || got != (api.AppendLogsResponse{LastSeq: last}) {
		t.Fatalf("re-sending dropped and kept lines = %+v, %v; want last_seq %d and nothing stored", got, err, last)
	}
	other := c.line(dropped)
	other.Text = "another text"
	if _, err := b.s.AppendLogs(b.ctx, c.r, []api.LogLine{other}); err != nil {
		t.Fatalf("re-sending a dropped seq with another text: %v; want it taken as a retry (its text is gone)", err)
	}
	if after := c.view(t).all; len(after) != len(before) || after[len(after)-1] != before[len(before)-1] {
		t.Fatalf("re-sent lines were stored: %d lines before, %d after", len(before), len(after))
	}
	// Lines beyond a gap are kept until the gap is filled (dropping them would have them asked for again);
	// then the cut goes on.
	c.send(t, last+2, last+200, "", api.AppendLogsResponse{LastSeq: last, Gap: true})
	v = c.view(t)
	held := 0
	for _, l := range v.tail {
		if l.Seq > last+1 {
			held++
		}
	}
	if held != 199 {
		t.Fatalf("%d lines beyond the gap kept, want all 199", held)
	}
	c.send(t, last+1, last+1, "", api.AppendLogsResponse{LastSeq: last + 200})
	last += 200
	c.check(t, "after the gap was filled", last, false)
	if leases, err := b.s.Leases(b.ctx, "w", b.now); err != nil || len(leases) != 1 || leases[0].LastSeq != last {
		t.Fatalf("Leases = %+v, %v; want last_seq %d", leases, err, last)
	}
	if _, _, err := b.s.Finish(b.ctx, c.r, store.Result{State: api.StateSucceeded, ExitCode: intp(0), LastSeq: last}); err != nil {
		t.Fatalf("Finish with last_seq %d: %v; dropped lines count as received", last, err)
	}
}

// testLogLimitUnderIt: a log within its limit, or leased without one, is kept whole.
func testLogLimitUnderIt(t *testing.T, b *bundle) {
	for _, limit := range []int64{0, 1 << 20} {
		c := newLogLimitCase(t, b, limit)
		c.send(t, 1, 500, "a note", api.AppendLogsResponse{LastSeq: 500})
		if v := c.view(t); len(v.markers) != 0 || len(v.head) != 500 || len(v.all) != 501 {
			t.Errorf("limit %d: %d lines stored, %d markers; want all 501 and no marker", limit, len(v.all), len(v.markers))
		}
	}
}
