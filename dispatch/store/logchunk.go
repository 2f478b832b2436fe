package store

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Both drivers store logs in chunks: a batch becomes few rows, each a run of lines whose numbered lines are
// contiguous (see the SQLite driver's migrations/0002_log_chunks.sql). What a chunk holds and how it is
// encoded is driver-neutral and lives here; where chunks are kept and how positions are given out is each
// driver's.

// SeqRun is the numbered lines First..Last of one chunk.
type SeqRun struct{ First, Last int64 }

// LogChunk is a run of lines to store as one row.
type LogChunk struct {
	Lines []api.LogLine
	Run   SeqRun // of its numbered lines; zero when it has none
	Size  int64  // its bytes in the chunk encoding, when SplitChunks set it
}

// CutChunks drops the numbered lines already stored (seq <= last, or inside one of the runs stored, sorted by
// First) or repeated earlier in the batch, and cuts the rest, in batch order, into chunks whose numbered lines
// are contiguous. The chunks share lines' backing array.
func CutChunks(lines []api.LogLine, last int64, stored []SeqRun) []LogChunk {
	var chunks []LogChunk
	var cur LogChunk
	start := 0              // index of cur's first line
	var top int64           // highest seq kept so far
	var kept map[int64]bool // seqs kept so far: built only once the batch goes backwards
	cut := func(end int) {
		if end > start {
			cur.Lines = lines[start:end]
			chunks = append(chunks, cur)
		}
		cur, start = LogChunk{}, end
	}
	for i, l := range lines {
		if l.Seq == 0 {
			continue
		}
		dup := l.Seq <= last || IsStored(stored, l.Seq)
		if !dup && l.Seq <= top {
			if kept == nil {
				kept = map[int64]bool{}
				for _, c := range chunks {
					for _, k := range c.Lines {
						kept[k.Seq] = true
					}
				}
				for _, k := range lines[start:i] {
					kept[k.Seq] = true
				}
			}
			dup = kept[l.Seq]
		}
		if dup {
			cut(i)
			start = i + 1
			continue
		}
		if cur.Run.First != 0 && l.Seq != cur.Run.Last+1 {
			cut(i)
		}
		if cur.Run.First == 0 {
			cur.Run.First = l.Seq
		}
		cur.Run.Last = l.Seq
		top = max(top, l.Seq)
		if kept != nil {
			kept[l.Seq] = true
		}
	}
	cut(len(lines))
	return chunks
}

// IsStored reports whether seq lies in one of runs (sorted by First, not overlapping).
func IsStored(runs []SeqRun, seq int64) bool {
	_, found := slices.BinarySearchFunc(runs, seq, func(r SeqRun, seq int64) int {
		switch {
		case r.Last < seq:
			return -1
		case r.First > seq:
			return 1
		}
		return 0
	})
	return found
}

// PieceBytes is the most a chunk of an operation with the given log limit holds, so that a cut drops little
// more than it must: the stored log stays within the limit plus one piece. 0: no limit, chunks stay whole.
func PieceBytes(limit int64) int64 {
	return limit / 16
}

// SplitChunks cuts the chunks larger than maxBytes (in the chunk encoding) into pieces at line boundaries,
// recording each one's size; a line larger than maxBytes is a piece of its own. maxBytes 0 leaves them whole.
func SplitChunks(chunks []LogChunk, maxBytes int64) []LogChunk {
	if maxBytes <= 0 {
		return chunks
	}
	var out []LogChunk
	for _, c := range chunks {
		start := 0
		var piece LogChunk
		flush := func(end int) {
			if end > start {
				piece.Lines = c.Lines[start:end]
				out = append(out, piece)
			}
			piece, start = LogChunk{}, end
		}
		for i, l := range c.Lines {
			n := LogLineBytes(l)
			if piece.Size > 0 && piece.Size+n > maxBytes {
				flush(i)
			}
			piece.Size += n
			if l.Seq > 0 {
				if piece.Run.First == 0 {
					piece.Run.First = l.Seq
				}
				piece.Run.Last = l.Seq
			}
		}
		flush(len(c.Lines))
	}
	return out
}

// EncodeChunk returns lines back to back in the chunk encoding (AppendLogLine).
func EncodeChunk(lines []api.LogLine) []byte {
	size := 0
	for _, l := range lines {
		size += len(l.Text) + 48
	}
	data := make([]byte, 0, size)
	for _, l := range lines {
		data = AppendLogLine(data, l)
	}
	return data
}

// AppendLogLine appends l in the chunk encoding: "<seq> <time> <stream> <bytes>:<text>\n" (time in Unix
// nanoseconds; bytes the text's length). LogLineBytes is its length.
func AppendLogLine(dst []byte, l api.LogLine) []byte {
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, l.Time.UnixNano(), 10)
	dst = append(dst, ' ')
	dst = append(dst, l.Stream...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(l.Text)), 10)
	dst = append(dst, ':')
	dst = append(dst, l.Text...)
	return append(dst, '\n')
}

// DecodeChunk appends the lines of a chunk of n lines whose last line has position pos to dst, skipping those
// at or before after, until dst holds limit lines. The lines' texts share one string per chunk.
func DecodeChunk(dst []api.LogLine, data string, pos, n, after int64, limit int) ([]api.LogLine, error) {
	p := pos - n
	for i := int64(0); i < n; i++ {
		if len(dst) == limit {
			return dst, nil
		}
		p++
		var l api.LogLine
		var t, size int64
		var ok bool
		if l.Seq, data, ok = cutInt(data, ' '); !ok {
			return dst, fmt.Errorf("line %d of the chunk at %d: bad seq", i+1, pos)
		}
		if t, data, ok = cutInt(data, ' '); !ok {
			return dst, fmt.Errorf("line %d of the chunk at %d: bad time", i+1, pos)
		}
		sp := strings.IndexByte(data, ' ')
		if sp < 0 {
			return dst, fmt.Errorf("line %d of the chunk at %d: no stream", i+1, pos)
		}
		l.Stream, data = internStream(data[:sp]), data[sp+1:]
		if size, data, ok = cutInt(data, ':'); !ok || size < 0 || int64(len(data)) < size+1 || data[size] != '\n' {
			return dst, fmt.Errorf("line %d of the chunk at %d: bad text length", i+1, pos)
		}
		l.Text, data = data[:size], data[size+1:]
		if p <= after {
			continue
		}
		l.Pos, l.Time = p, time.Unix(0, t).UTC()
		dst = append(dst, l)
	}
	if data != "" {
		return dst, fmt.Errorf("the chunk at %d has %d bytes after its %d lines", pos, len(data), n)
	}
	return dst, nil
}

// cutInt parses the decimal integer before sep at the start of s.
func cutInt(s string, sep byte) (int64, string, bool) {
	i := strings.IndexByte(s, sep)
	if i <= 0 {
		return 0, s, false
	}
	v, err := strconv.ParseInt(s[:i], 10, 64)
	return v, s[i+1:], err == nil
}

// internStream returns the constant for a known stream name, so lines do not keep their chunk alive by it.
func internStream(s string) string {
	switch s {
	case api.StreamStdout:
		return api.StreamStdout
	case api.StreamStderr:
		return api.StreamStderr
	case api.StreamSystem:
		return api.StreamSystem
	}
	return s
}

// RepeatedSeqs returns the lowest and highest seq of the batch's numbered lines that are stored already (at
// or before the contiguous end last, or in one of the runs stored beyond it); 0, 0 when there are none, as
// for lines that arrive in order. A driver reads the chunks holding lo..hi into a HeldLines.
func RepeatedSeqs(lines []api.LogLine, last int64, stored []SeqRun) (lo, hi int64) {
	for _, l := range lines {
		if l.Seq > 0 && (l.Seq <= last || IsStored(stored, l.Seq)) {
			if lo == 0 || l.Seq < lo {
				lo = l.Seq
			}
			hi = max(hi, l.Seq)
		}
	}
	return lo, hi
}

// HeldLines are stored numbered lines by seq, to compare a batch's repeats with.
type HeldLines map[int64]api.LogLine

// AddChunk decodes a stored chunk (n lines, the last at position pos) and keeps its lines with seqs in lo..hi.
func (h HeldLines) AddChunk(data string, pos, n, lo, hi int64) error {
	lines, err := DecodeChunk(nil, data, pos, n, 0, int(n))
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.Seq >= lo && l.Seq <= hi {
			h[l.Seq] = l
		}
	}
	return nil
}

// Conflict refuses the batch with a *LogConflictError at its first numbered line that h holds with another
// stream or text; nil when there is none.
func (h HeldLines) Conflict(lines []api.LogLine) error {
	for i, l := range lines {
		if held, ok := h[l.Seq]; ok && l.Seq > 0 && (held.Stream != l.Stream || held.Text != l.Text) {
			return &LogConflictError{Seq: l.Seq, Index: i}
		}
	}
	return nil
}
