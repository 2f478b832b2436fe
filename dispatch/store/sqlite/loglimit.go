package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// An operation's log limit (migrations/0006_log_limit.sql; the rules are store.go's, the cut is store.CutLog).
// Past it, AppendLogs drops the chunks after the head lowest seq first, so what was dropped is one run of
// seqs. One marker chunk holds it: its one line says what was dropped, and its first_seq..last_seq keep the
// run stored for the contiguous end and for re-sends. The marker sits at the highest position dropped, so a
// follower whose cursor lies before a dropped line meets it before any line after it.

// readLogCut reads the log limit of the operation with row seq opSeq.
func (s *Store) readLogCut(ctx context.Context, tx *sql.Tx, opSeq int64) (store.LogCut, error) {
	var c store.LogCut
	var head sql.NullInt64
	err := s.txRow(ctx, tx, `SELECT log_limit, log_bytes, log_head_seq, log_dropped_lines, log_dropped_bytes
		FROM operations WHERE seq = ?`, opSeq).Scan(&c.Limit, &c.Bytes, &head, &c.DroppedLines, &c.DroppedBytes)
	if err != nil {
		return c, fmt.Errorf("reading the log limit: %w", err)
	}
	if head.Valid {
		c.HeadSeq = &head.Int64
	}
	return c, nil
}

// cutLog keeps the operation's log within its limit after an append added added bytes and left the contiguous
// end at last, and records the cut's state. now is the marker line's time.
func (s *Store) cutLog(ctx context.Context, tx *sql.Tx, opSeq int64, c store.LogCut, added, last int64, now time.Time) error {
	if c.Limit <= 0 {
		return nil
	}
	c, err := store.CutLog(ctx, cutter{s, tx, opSeq}, c, added, last, now)
	if err != nil {
		return err
	}
	_, err = s.txExec(ctx, tx, `UPDATE operations SET log_bytes = ?, log_head_seq = ?, log_dropped_lines = ?, log_dropped_bytes = ?
		WHERE seq = ?`, c.Bytes, c.HeadSeq, c.DroppedLines, c.DroppedBytes, opSeq)
	if err != nil {
		return fmt.Errorf("recording the log's size: %w", err)
	}
	return nil
}

// cutter is store.LogCutter on one operation's chunks, in the append's transaction.
type cutter struct {
	s     *Store
	tx    *sql.Tx
	opSeq int64
}

func (c cutter) HeadChunks(ctx context.Context, last int64, fn func(store.StoredChunk) bool) error {
	rows, err := c.s.txQuery(ctx, c.tx, `SELECT pos, first_seq, last_seq, n, length(lines) FROM log_chunks
		WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ? ORDER BY first_seq`, c.opSeq, last)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var ch store.StoredChunk
		if err := rows.Scan(&ch.Pos, &ch.First, &ch.Last, &ch.N, &ch.Size); err != nil {
			return err
		}
		if !fn(ch) {
			break
		}
	}
	return rows.Err()
}

func (c cutter) ChunkFrom(ctx context.Context, first int64) (store.StoredChunk, bool, error) {
	ch := store.StoredChunk{First: first}
	err := c.s.txRow(ctx, c.tx, `SELECT pos, last_seq, n, length(lines) FROM log_chunks WHERE op_seq = ? AND first_seq = ? AND first_seq > 0`,
		c.opSeq, first).Scan(&ch.Pos, &ch.Last, &ch.N, &ch.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return ch, false, nil
	}
	return ch, err == nil, err
}

func (c cutter) DeleteChunk(ctx context.Context, pos int64) error {
	_, err := c.s.txExec(ctx, c.tx, `DELETE FROM log_chunks WHERE pos = ?`, pos)
	return err
}

func (c cutter) InsertMarker(ctx context.Context, pos, first, last int64, data []byte) error {
	_, err := c.s.txExec(ctx, c.tx, `INSERT INTO log_chunks (pos, op_seq, first_seq, last_seq, n, lines) VALUES (?, ?, ?, ?, 1, ?)`,
		pos, c.opSeq, first, last, data)
	return err
}
