package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// LogsOptions selects what Logs reads.
type LogsOptions struct {
	// After is the position to read after (0: from the start).
	After int64
	// Follow waits for more lines until the operation ends. A broken stream is resumed from the last line
	// received, so no line is missed or repeated.
	Follow bool
}

// Logs calls fn for each stored line of an operation after opts.After, in order. It returns the operation's
// end when the stream reached it (always when following, unless ctx ends first), nil otherwise.
func (c *Client) Logs(ctx context.Context, id string, opts LogsOptions, fn func(api.LogLine) error) (*api.LogEnd, error) {
	after := opts.After
	backoff := c.rc.RetryWaitMin
	for {
		end, last, err := c.logsOnce(ctx, id, after, opts.Follow, fn)
		if last > after {
			after, backoff = last, c.rc.RetryWaitMin
		}
		if end != nil {
			return end, nil
		}
		var fe fnError
		if errors.As(err, &fe) {
			return nil, fe.err
		}
		if !opts.Follow {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, nil // the operation has not ended: that is all there is for now
			}
			return nil, err
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			return nil, err
		}
		// The stream ended early (network, server restart): resume after the last line received.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.rc.RetryWaitMax)
	}
}

type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func (c *Client) logsOnce(ctx context.Context, id string, after int64, follow bool, fn func(api.LogLine) error) (*api.LogEnd, int64, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.send(ctx, retrySafe, "GET", "/api/v1/operations/"+url.PathEscape(id)+"/logs", q, nil, "")
	if err != nil {
		return nil, after, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev api.LogEvent
		if !api.DecodeLogEvent(line, &ev) { // the fast path takes line records
			if err := json.Unmarshal(line, &ev); err != nil {
				return nil, after, fmt.Errorf("decoding a log record: %w", err)
			}
		}
		switch {
		case ev.End != nil:
			return ev.End, after, nil
		case ev.Line != nil:
			if err := fn(*ev.Line); err != nil {
				return nil, after, fnError{err}
			}
			after = ev.Line.Pos
		}
	}
	if err := sc.Err(); err != nil {
		return nil, after, fmt.Errorf("reading the log stream: %w", err)
	}
	return nil, after, io.ErrUnexpectedEOF
}
