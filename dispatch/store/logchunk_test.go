package store_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// TestLogLineBytes: the limit counts a line as exactly what the chunk encoding stores.
func TestLogLineBytes(t *testing.T) {
	for _, l := range []api.LogLine{
		{},
		{Seq: 1, Time: time.Unix(0, 1), Stream: api.StreamStdout, Text: "x"},
		{Seq: 123456789, Time: api.MaxLogTime, Stream: api.StreamStderr, Text: strings.Repeat("é", 5000)},
		{Seq: math.MaxInt64, Time: api.MinLogTime, Stream: api.StreamSystem, Text: "before 1970"},
	} {
		if got, want := store.LogLineBytes(l), int64(len(store.AppendLogLine(nil, l))); got != want {
			t.Errorf("LogLineBytes(%+v) = %d, want %d (the encoded length)", l, got, want)
		}
	}
}

// TestSplitChunks: pieces hold at most the bound (a larger line alone), keep every line in order, and carry
// their own runs and sizes.
func TestSplitChunks(t *testing.T) {
	var lines []api.LogLine
	for i := int64(1); i <= 10; i++ {
		lines = append(lines, api.LogLine{Seq: i, Stream: api.StreamStdout, Text: strings.Repeat("x", int(i)*10)})
	}
	lines = append(lines[:3], append([]api.LogLine{{Stream: api.StreamSystem, Text: "note"}}, lines[3:]...)...)
	in := []store.LogChunk{{Lines: lines, Run: store.SeqRun{First: 1, Last: 10}}}
	const bound = 120
	var got []api.LogLine
	next := int64(1)
	for _, p := range store.SplitChunks(in, bound) {
		var size int64
		for _, l := range p.Lines {
			size += store.LogLineBytes(l)
		}
		if size != p.Size || (size > bound && len(p.Lines) > 1) {
			t.Errorf("piece of %d lines: size %d, recorded %d, bound %d", len(p.Lines), size, p.Size, bound)
		}
		if p.Run.First != next || p.Run.Last < p.Run.First {
			t.Errorf("piece run %+v, want it to start at %d", p.Run, next)
		}
		next = p.Run.Last + 1
		got = append(got, p.Lines...)
	}
	if len(got) != len(lines) || next != 11 {
		t.Errorf("pieces hold %d lines up to seq %d, want %d up to 10", len(got), next-1, len(lines))
	}
}
