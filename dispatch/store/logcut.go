package store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// LogLineBytes is what a line counts for against its operation's log limit, in every driver: its text, its
// seq, its time in Unix nanoseconds and its text's length in decimal, its stream, and five separators (the
// SQLite driver stores exactly this).
func LogLineBytes(l api.LogLine) int64 {
	return int64(digits(l.Seq) + 1 + digits(l.Time.UnixNano()) + 1 + len(l.Stream) + 1 + digits(int64(len(l.Text))) + 1 + len(l.Text) + 1)
}

// digits is the length of n in decimal (without allocating: it runs for every line appended).
func digits(n int64) int {
	d := 1
	if n < 0 {
		if n == math.MinInt64 {
			return 20
		}
		d, n = 2, -n
	}
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// CutMarker is the text of the one line a driver keeps where it dropped the middle of a log that passed its
// limit (see the rules in store.go): lines and bytes are what it dropped so far, limit the operation's.
func CutMarker(lines, bytes, limit int64) string {
	return fmt.Sprintf("… %s lines (%s) dropped here: this log passed its %s limit (scriptPods.logLimit), "+
		"so the server keeps its first part and its last part …", thousands(lines), IEC(bytes), IEC(limit))
}

// thousands writes n with commas between groups of three digits: 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// IEC writes a byte count with a binary unit and one decimal where it has one: 900 B, 1.5 KiB, 100 MiB.
func IEC(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + unit
}

// LogCut is an operation's log limit and the state of its cut, as a driver keeps it on the operation (see the
// rules in store.go): Bytes is what its chunks hold (the marker aside); once the log passed its limit, HeadSeq
// is the last seq of its head, and the numbered lines dropped after it, one run HeadSeq+1 .. k held by one
// marker chunk, count DroppedLines and DroppedBytes.
type LogCut struct {
	Limit, Bytes               int64
	HeadSeq                    *int64
	DroppedLines, DroppedBytes int64
}

// StoredChunk is what the cut reads of one stored chunk of numbered lines: its position, its run and its
// number of lines, and its size in the chunk encoding.
type StoredChunk struct {
	Pos, First, Last, N, Size int64
}

// LogCutter is what CutLog needs of a driver: the chunks of the operation being appended to, inside the
// append's transaction.
type LogCutter interface {
	// HeadChunks calls fn with the chunks whose run starts in 1..last, in seq order, until fn returns false.
	HeadChunks(ctx context.Context, last int64, fn func(StoredChunk) bool) error
	// ChunkFrom returns the chunk whose run starts at first; false when there is none.
	ChunkFrom(ctx context.Context, first int64) (StoredChunk, bool, error)
	// DeleteChunk deletes the chunk at pos.
	DeleteChunk(ctx context.Context, pos int64) error
	// InsertMarker stores a chunk of one line (data, in the chunk encoding) at pos whose run is first..last.
	InsertMarker(ctx context.Context, pos, first, last int64, data []byte) error
}

// CutLog keeps an operation's log within its limit after an append added added bytes and left the contiguous
// end at last, and returns the cut's new state for the driver to store (when c.Limit > 0). Past the limit it
// finds the head once (the chunks from seq 1 that hold half the limit), then drops the chunks after it lowest
// seq first while the log is over its limit, never the one that holds the contiguous end, and keeps one
// marker chunk at the highest position dropped whose run covers all that was dropped. now is the marker
// line's time.
func CutLog(ctx context.Context, lc LogCutter, c LogCut, added, last int64, now time.Time) (LogCut, error) {
	if c.Limit <= 0 {
		return c, nil
	}
	c.Bytes += added
	if c.Bytes <= c.Limit {
		return c, nil
	}
	if c.HeadSeq == nil {
		var head, acc int64
		err := lc.HeadChunks(ctx, last, func(ch StoredChunk) bool {
			if acc >= c.Limit/2 || ch.First != head+1 {
				return false
			}
			head, acc = ch.Last, acc+ch.Size
			return true
		})
		if err != nil {
			return c, fmt.Errorf("finding the log's head: %w", err)
		}
		if head == 0 {
			return c, nil // no head yet while seq 1 is missing
		}
		c.HeadSeq = &head
	}
	first := *c.HeadSeq + 1
	end, markerPos, oldMarker := *c.HeadSeq, int64(0), int64(0)
	if c.DroppedLines > 0 {
		m, ok, err := lc.ChunkFrom(ctx, first)
		if err == nil && !ok {
			err = fmt.Errorf("no chunk holds seq %d", first)
		}
		if err != nil {
			return c, fmt.Errorf("reading the log's cut marker: %w", err)
		}
		oldMarker, markerPos, end = m.Pos, m.Pos, m.Last
	}
	dropped := false
	for c.Bytes > c.Limit {
		ch, ok, err := lc.ChunkFrom(ctx, end+1)
		if err != nil {
			return c, fmt.Errorf("finding the log's next lines to drop: %w", err)
		}
		if !ok || ch.Last >= last {
			break // the tail keeps the contiguous end
		}
		if err := lc.DeleteChunk(ctx, ch.Pos); err != nil {
			return c, fmt.Errorf("dropping log lines %d..%d: %w", end+1, ch.Last, err)
		}
		c.Bytes -= ch.Size
		c.DroppedLines += ch.N
		c.DroppedBytes += ch.Size
		end, markerPos, dropped = ch.Last, max(markerPos, ch.Pos), true
	}
	if !dropped {
		return c, nil
	}
	if oldMarker != 0 {
		if err := lc.DeleteChunk(ctx, oldMarker); err != nil {
			return c, fmt.Errorf("replacing the log's cut marker: %w", err)
		}
	}
	marker := AppendLogLine(nil, api.LogLine{Time: now, Stream: api.StreamSystem, Text: CutMarker(c.DroppedLines, c.DroppedBytes, c.Limit)})
	if err := lc.InsertMarker(ctx, markerPos, first, end, marker); err != nil {
		return c, fmt.Errorf("writing the log's cut marker: %w", err)
	}
	return c, nil
}
