package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Logs live in log_chunks (migrations/0002_log_chunks.sql): a batch is stored as few rows, each a run of
// lines whose numbered lines are contiguous. Storing a line costs encoding it; the B-trees see one insert per
// chunk.

// seqRun is the numbered lines first..last of one chunk.
type seqRun struct{ first, last int64 }

// AppendLogs stores lines of a leased operation: lines with seq >= 1 once per (operation, seq), seq 0 lines
// as they come, all in batch order. It then advances the operation's contiguous last_seq.
//
// Seqs up to last_seq are stored already; of the rest, the runs the operation holds beyond last_seq are read
// (usually none: lines arrive in order), so lines stored before and repeats within the batch are dropped.
// What remains is cut into chunks wherever its numbered lines stop being contiguous. The walk of the
// contiguous end costs one look-up per chunk it advances over, so a long log costs linear time overall even
// when lines arrive out of order.
func (s *Store) AppendLogs(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	var resp api.AppendLogsResponse
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if err != nil {
			return err
		}
		last := o.lastSeq
		var hi int64
		for _, l := range lines {
			hi = max(hi, l.Seq)
		}
		var stored []seqRun
		if hi > last {
			if stored, err = s.runsBeyond(ctx, tx, o.seq, last, hi); err != nil {
				return err
			}
		}
		if err := s.checkRepeats(ctx, tx, o.seq, lines, last, stored); err != nil {
			return err
		}
		cut, err := s.readLogCut(ctx, tx, o.seq)
		if err != nil {
			return err
		}
		extends, added := false, int64(0)
		var kept int
		var keptBytes int64
		for _, c := range splitChunks(cutChunks(lines, last, stored), pieceBytes(cut.limit)) {
			if err := s.insertChunk(ctx, tx, o.seq, c); err != nil {
				return fmt.Errorf("storing %d lines: %w", len(c.lines), err)
			}
			extends, added = extends || c.run.first == last+1, added+c.size
			kept += len(c.lines)
			for _, l := range c.lines {
				keptBytes += int64(len(l.Text))
			}
		}
		if extends {
			for {
				var next int64
				err := s.txRow(ctx, tx, `SELECT last_seq FROM log_chunks WHERE op_seq = ? AND first_seq = ? AND first_seq > 0`,
					o.seq, last+1).Scan(&next)
				if errors.Is(err, sql.ErrNoRows) {
					break
				}
				if err != nil {
					return fmt.Errorf("finding the contiguous end: %w", err)
				}
				last = next
			}
			if _, err := s.txExec(ctx, tx, `UPDATE operations SET last_seq = ? WHERE seq = ?`, last, o.seq); err != nil {
				return fmt.Errorf("recording the contiguous end: %w", err)
			}
		}
		if err := s.cutLog(ctx, tx, o.seq, cut, added, last, ref.Now); err != nil {
			return err
		}
		var n int
		if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM (SELECT 1 FROM log_chunks WHERE op_seq = ? AND first_seq > ? AND first_seq > 0 LIMIT 1)`,
			o.seq, last).Scan(&n); err != nil {
			return fmt.Errorf("looking for a gap: %w", err)
		}
		resp = api.AppendLogsResponse{LastSeq: last, Gap: n > 0, Stored: kept, StoredBytes: keptBytes}
		return nil
	})
	if err != nil {
		return resp, fmt.Errorf("appending logs of operation %s: %w", ref.OperationID, err)
	}
	return resp, nil
}

// runsBeyond returns the runs of numbered lines an operation holds that start after its contiguous end last
// and at or before hi, in order. (Every run that holds a seq beyond last starts beyond it: otherwise the
// contiguous end would have walked over it.)
func (s *Store) runsBeyond(ctx context.Context, tx *sql.Tx, opSeq, last, hi int64) ([]seqRun, error) {
	rows, err := s.txQuery(ctx, tx, `SELECT first_seq, last_seq FROM log_chunks
		WHERE op_seq = ? AND first_seq > ? AND first_seq <= ? AND first_seq > 0 ORDER BY first_seq`, opSeq, last, hi)
	if err != nil {
		return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
	}
	defer rows.Close()
	var runs []seqRun
	for rows.Next() {
		var r seqRun
		if err := rows.Scan(&r.first, &r.last); err != nil {
			return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
	}
	return runs, nil
}

// checkRepeats compares the lines of the batch whose seq is stored already (at or before last, or in one of
// the runs stored beyond it) with the stored ones, and refuses the batch with a *store.LogConflictError at
// the first whose stream or text differs. Lines that arrive in order are beyond everything stored: then it
// reads nothing.
func (s *Store) checkRepeats(ctx context.Context, tx *sql.Tx, opSeq int64, lines []api.LogLine, last int64, stored []seqRun) error {
	lo, hi := int64(0), int64(0)
	for _, l := range lines {
		if l.Seq > 0 && (l.Seq <= last || isStored(stored, l.Seq)) {
			if lo == 0 || l.Seq < lo {
				lo = l.Seq
			}
			hi = max(hi, l.Seq)
		}
	}
	if lo == 0 {
		return nil
	}
	// The runs holding lo..hi: from the one that holds lo (the last to start at or before it) to hi.
	rows, err := s.txQuery(ctx, tx, `SELECT pos, n, lines FROM log_chunks WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ?
		AND first_seq >= (SELECT MAX(first_seq) FROM log_chunks WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ?)
		ORDER BY first_seq`, opSeq, hi, opSeq, lo)
	if err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	defer rows.Close()
	have := map[int64]api.LogLine{}
	var held []api.LogLine
	for rows.Next() {
		var pos, n int64
		var data []byte
		if err := rows.Scan(&pos, &n, &data); err != nil {
			return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
		}
		if held, err = decodeChunk(held[:0], string(data), pos, n, 0, int(n)); err != nil {
			return err
		}
		for _, l := range held {
			if l.Seq >= lo && l.Seq <= hi {
				have[l.Seq] = l
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	for i, l := range lines {
		if h, ok := have[l.Seq]; ok && l.Seq > 0 && (h.Stream != l.Stream || h.Text != l.Text) {
			return &store.LogConflictError{Seq: l.Seq, Index: i}
		}
	}
	return nil
}

// chunk is a run of lines to store as one row.
type chunk struct {
	lines []api.LogLine
	run   seqRun // of its numbered lines; zero when it has none
	size  int64  // its bytes in the chunk encoding, when splitChunks set it (loglimit.go)
}

// cutChunks drops the numbered lines already stored (seq <= last, or inside one of the runs stored, sorted by
// first) or repeated earlier in the batch, and cuts the rest, in batch order, into chunks whose numbered lines
// are contiguous. The chunks share lines' backing array.
func cutChunks(lines []api.LogLine, last int64, stored []seqRun) []chunk {
	var chunks []chunk
	var cur chunk
	start := 0              // index of cur's first line
	var top int64           // highest seq kept so far
	var kept map[int64]bool // seqs kept so far: built only once the batch goes backwards
	cut := func(end int) {
		if end > start {
			cur.lines = lines[start:end]
			chunks = append(chunks, cur)
		}
		cur, start = chunk{}, end
	}
	for i, l := range lines {
		if l.Seq == 0 {
			continue
		}
		dup := l.Seq <= last || isStored(stored, l.Seq)
		if !dup && l.Seq <= top {
			if kept == nil {
				kept = map[int64]bool{}
				for _, c := range chunks {
					for _, k := range c.lines {
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
		if cur.run.first != 0 && l.Seq != cur.run.last+1 {
			cut(i)
		}
		if cur.run.first == 0 {
			cur.run.first = l.Seq
		}
		cur.run.last = l.Seq
		top = max(top, l.Seq)
		if kept != nil {
			kept[l.Seq] = true
		}
	}
	cut(len(lines))
	return chunks
}

// isStored reports whether seq lies in one of runs (sorted by first, not overlapping).
func isStored(runs []seqRun, seq int64) bool {
	_, found := slices.BinarySearchFunc(runs, seq, func(r seqRun, seq int64) int {
		switch {
		case r.last < seq:
			return -1
		case r.first > seq:
			return 1
		}
		return 0
	})
	return found
}

// insertChunk stores c after every position in use.
func (s *Store) insertChunk(ctx context.Context, tx *sql.Tx, opSeq int64, c chunk) error {
	size := 0
	for _, l := range c.lines {
		size += len(l.Text) + 48
	}
	data := make([]byte, 0, size)
	for _, l := range c.lines {
		data = appendLine(data, l)
	}
	_, err := s.txExec(ctx, tx, `INSERT INTO log_chunks (pos, op_seq, first_seq, last_seq, n, lines)
		VALUES ((SELECT IFNULL(MAX(pos), 0) FROM log_chunks) + ?, ?, ?, ?, ?, ?)`,
		len(c.lines), opSeq, c.run.first, c.run.last, len(c.lines), data)
	return err
}

// appendLine appends l in the chunk encoding: "<seq> <time> <stream> <bytes>:<text>\n".
func appendLine(dst []byte, l api.LogLine) []byte {
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, nanos(l.Time), 10)
	dst = append(dst, ' ')
	dst = append(dst, l.Stream...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(l.Text)), 10)
	dst = append(dst, ':')
	dst = append(dst, l.Text...)
	return append(dst, '\n')
}

// decodeChunk appends the lines of a chunk whose last line has position pos to dst, skipping those at or
// before after, until dst holds limit lines. The lines' texts share one string per chunk.
func decodeChunk(dst []api.LogLine, data string, pos, n, after int64, limit int) ([]api.LogLine, error) {
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
		l.Pos, l.Time = p, fromNanos(t)
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

// Logs returns up to limit lines of an operation after position after.
func (s *Store) Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.rQuery(ctx, `SELECT pos, n, lines FROM log_chunks
		WHERE op_seq = (SELECT seq FROM operations WHERE id = ?) AND pos > ? ORDER BY pos`, id, after)
	if err != nil {
		return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
	}
	defer rows.Close()
	lines := []api.LogLine{}
	var data sql.RawBytes
	for len(lines) < limit && rows.Next() {
		var pos, n int64
		if err := rows.Scan(&pos, &n, &data); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
		if len(lines) == 0 {
			lines = make([]api.LogLine, 0, min(int64(limit), pos-max(after, pos-n)))
		}
		if lines, err = decodeChunk(lines, string(data), pos, n, after, limit); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
	}
	return lines, nil
}
