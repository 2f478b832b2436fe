package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/decode"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// followLogs streams an operation's stored lines after ?after= as NDJSON api.LogEvent records. Without
// follow it returns what is stored (and the end record if the operation ended). With follow=true it waits
// for more lines until the operation ends, then sends the end record. Lines are read after the state, so
// once a terminal state is seen every line is already stored (a finished operation takes no more lines).
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request, _ caller) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errf(http.StatusBadRequest, "after", "", "%q: give the pos of the last line you have (0 for the start)", v)
		}
		after = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errf(http.StatusBadRequest, "follow", "", "%q: use true or false", v)
		}
		follow = b
	}
	ctx := r.Context()
	if _, err := s.st.OperationSummary(ctx, id); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	var buf []byte
	var lineEnc api.LineEncoder
	flush := func() bool {
		if bw.Flush() != nil {
			return false
		}
		return rc.Flush() == nil
	}
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	const page = 5000 // lines: a batch is stored as one chunk of up to 5,000 lines
	for {
		changed := s.logs.Watch(id)
		op, err := s.st.OperationSummary(ctx, id)
		if err != nil {
			return nil // headers are sent; the client sees a stream without its end record and resumes
		}
		for {
			lines, err := s.st.Logs(ctx, id, after, page)
			if err != nil {
				return nil
			}
			for i := range lines {
				// What enc.Encode(api.LogEvent{Line: &lines[i]}) writes, without reflection.
				buf = append(buf[:0], `{"line":`...)
				if buf, err = lineEnc.Append(buf, lines[i]); err != nil {
					return nil
				}
				buf = append(buf, "}\n"...)
				if _, err := bw.Write(buf); err != nil {
					return nil
				}
				after = lines[i].Pos
			}
			if len(lines) < page {
				break
			}
		}
		if op.State.Terminal() {
			_ = enc.Encode(api.LogEvent{End: &api.LogEnd{State: op.State, ExitCode: op.ExitCode, Message: op.Message}})
			flush()
			return nil
		}
		if !flush() || !follow {
			return nil
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// decodeAppendLogs decodes a log batch. The batches a worker sends (thousands of lines each) take
// api.DecodeAppendLogs, which reads the JSON the protocol defines without reflection; any body it does not
// fully understand goes to decode.Bytes, the strict decoder every request uses, which decodes it or names what
// is wrong. When the fast path succeeds its result is what decode.Bytes would return (a differential fuzz
// test checks it).
func decodeAppendLogs(data []byte, req *api.AppendLogsRequest) error {
	if api.DecodeAppendLogs(data, req, validate.MaxLogLines) {
		return nil
	}
	*req = api.AppendLogsRequest{}
	return decode.Bytes(data, req)
}

// logBodies keeps the buffers log batches are read into: a busy log sends a batch of up to a few MiB every few
// milliseconds, and each new one is work for the garbage collector and the scavenger (which returns freed
// pages to the kernel; with the collector, about a fifth of the log path's CPU in BenchmarkAppendLogsHTTP).
// Decoding copies what it keeps, so a buffer is free again once its batch is decoded.
var logBodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxKeptLogBody is the largest buffer kept for the next batch (two full batches of the worker's).
const maxKeptLogBody = 2 << 20

func logBody() *bytes.Buffer {
	b := logBodies.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func keepLogBody(b *bytes.Buffer) {
	if b.Cap() <= maxKeptLogBody {
		logBodies.Put(b)
	}
}
