package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// An operation's log limit, as in the SQLite driver (store.CutLog cuts; the rules are store.go's). It all
// happens under the operation's row lock (lockLog), so concurrent appenders, on one server or several, cut one
// after the other and count every byte once (TestConcurrentAppendsLogLimit).

// cutLog keeps the operation's log within its limit after an append added added bytes and left the contiguous
// end at last, and records the cut's state. now is the marker line's time.
func cutLog(ctx context.Context, tx pgx.Tx, opSeq int64, c store.LogCut, added, last int64, now time.Time) error {
	if c.Limit <= 0 {
		return nil
	}
	c, err := store.CutLog(ctx, cutter{tx, opSeq}, c, added, last, now)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE operations SET log_bytes = $1, log_head_seq = $2, log_dropped_lines = $3, log_dropped_bytes = $4
		WHERE seq = $5`, c.Bytes, c.HeadSeq, c.DroppedLines, c.DroppedBytes, opSeq)
	if err != nil {
		return fmt.Errorf("recording the log's size: %w", err)
	}
	return nil
}

// cutter is store.LogCutter on one operation's chunks, in the append's transaction.
type cutter struct {
	tx    pgx.Tx
	opSeq int64
}

func (c cutter) HeadChunks(ctx context.Context, last int64, fn func(store.StoredChunk) bool) error {
	rows, err := c.tx.Query(ctx, `SELECT pos, first_seq, last_seq, n, length(lines) FROM log_chunks
		WHERE op_seq = $1 AND first_seq > 0 AND first_seq <= $2 ORDER BY first_seq`, c.opSeq, last)
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
	rows.Close()
	return rows.Err()
}

func (c cutter) ChunkFrom(ctx context.Context, first int64) (store.StoredChunk, bool, error) {
	ch := store.StoredChunk{First: first}
	err := c.tx.QueryRow(ctx, `SELECT pos, last_seq, n, length(lines) FROM log_chunks WHERE op_seq = $1 AND first_seq = $2 AND first_seq > 0`,
		c.opSeq, first).Scan(&ch.Pos, &ch.Last, &ch.N, &ch.Size)
	if errors.Is(err, pgx.ErrNoRows) {
		return ch, false, nil
	}
	return ch, err == nil, err
}

func (c cutter) DeleteChunk(ctx context.Context, pos int64) error {
	_, err := c.tx.Exec(ctx, `DELETE FROM log_chunks WHERE op_seq = $1 AND pos = $2`, c.opSeq, pos)
	return err
}

func (c cutter) InsertMarker(ctx context.Context, pos, first, last int64, data []byte) error {
	_, err := c.tx.Exec(ctx, `INSERT INTO log_chunks (op_seq, pos, first_seq, last_seq, n, lines) VALUES ($1, $2, $3, $4, 1, $5)`,
		c.opSeq, pos, first, last, data)
	return err
}
