package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

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
				if buf, err = lines[i].AppendJSON(buf); err != nil {
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

// decodeAppendLogs decodes a log batch. The batches a worker sends (thousands of lines each) take a fast path
// that reads exactly the JSON the protocol defines without reflection; any body it does not fully understand
// (unknown or repeated fields, nulls, other number forms, malformed JSON) goes to decode.Bytes, the strict
// decoder every request uses, which decodes it or names what is wrong. When the fast path succeeds its result
// is what decode.Bytes would return (a differential fuzz test checks it).
func decodeAppendLogs(data []byte, req *api.AppendLogsRequest) error {
	if fastAppendLogs(data, req) {
		return nil
	}
	*req = api.AppendLogsRequest{}
	return decode.Bytes(data, req)
}

// fastAppendLogs is the fast path of decodeAppendLogs; false means "use the general decoder". Strings share
// one copy of the body.
func fastAppendLogs(data []byte, req *api.AppendLogsRequest) bool {
	sc := jsonScanner{data: data, str: string(data)}
	*req = api.AppendLogsRequest{}
	var seenLease, seenLines bool
	ok := sc.object(func(key string) bool {
		switch {
		case key == "lease_id" && !seenLease:
			seenLease = true
			var ok bool
			req.LeaseID, ok = sc.string()
			return ok
		case key == "lines" && !seenLines:
			seenLines = true
			// An encoded line takes at least 60 bytes.
			req.Lines = make([]api.LogLine, 0, min(len(data)/60, validate.MaxLogLines))
			return sc.array(func() bool {
				var l api.LogLine
				var seen [5]bool
				ok := sc.object(func(key string) bool {
					var ok bool
					switch key {
					case "pos":
						if seen[0] {
							return false
						}
						seen[0] = true
						l.Pos, ok = sc.int()
					case "seq":
						if seen[1] {
							return false
						}
						seen[1] = true
						l.Seq, ok = sc.int()
					case "time":
						if seen[2] {
							return false
						}
						seen[2] = true
						ok = sc.time(&l.Time)
					case "stream":
						if seen[3] {
							return false
						}
						seen[3] = true
						l.Stream, ok = sc.string()
						l.Stream = internStream(l.Stream)
					case "text":
						if seen[4] {
							return false
						}
						seen[4] = true
						l.Text, ok = sc.string()
					}
					return ok
				})
				req.Lines = append(req.Lines, l)
				return ok
			})
		}
		return false
	})
	return ok && sc.end()
}

// internStream returns the constant for a known stream name, so a line does not hold the request body by it.
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

// jsonScanner reads the subset of JSON the fast path accepts. Every method reports false for anything outside
// it; the caller then hands the whole body to the general decoder.
type jsonScanner struct {
	data []byte
	str  string // the same bytes: values are cut from it without copying
	i    int
}

func (s *jsonScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScanner) next(c byte) bool {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (s *jsonScanner) end() bool {
	s.space()
	return s.i == len(s.data)
}

// object reads {"key": value, ...}, calling member with each key positioned at its value.
func (s *jsonScanner) object(member func(key string) bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	for {
		key, ok := s.string()
		if !ok || !s.next(':') || !member(key) {
			return false
		}
		if s.next('}') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}

// array reads [value, ...], calling elem positioned at each value.
func (s *jsonScanner) array(elem func() bool) bool {
	if !s.next('[') {
		return false
	}
	if s.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.next(']') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}

// string reads a string without escapes and with valid UTF-8, or one with escapes through encoding/json.
func (s *jsonScanner) string() (string, bool) {
	if !s.next('"') {
		return "", false
	}
	start := s.i
	ascii, escaped := true, false
	for ; s.i < len(s.data); s.i++ {
		switch c := s.data[s.i]; {
		case c == '"':
			raw := s.str[start:s.i]
			s.i++
			switch {
			case escaped:
				var v string
				if json.Unmarshal(s.data[start-1:s.i], &v) != nil {
					return "", false
				}
				return v, true
			case !ascii && !utf8.ValidString(raw):
				return "", false // encoding/json replaces invalid bytes; leave that to it
			}
			return raw, true
		case c == '\\':
			escaped = true
			s.i++ // the escaped byte cannot end the string
		case c < 0x20:
			return "", false // not JSON
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// int reads an integer in JSON's form (-?(0|[1-9][0-9]*)) that fits int64 and is not followed by a fraction or
// an exponent.
func (s *jsonScanner) int() (int64, bool) {
	s.space()
	start := s.i
	if s.i < len(s.data) && s.data[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	if s.i == digits || (s.data[digits] == '0' && s.i > digits+1) {
		return 0, false
	}
	if s.i < len(s.data) && (s.data[s.i] == '.' || s.data[s.i] == 'e' || s.data[s.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(s.str[start:s.i], 10, 64)
	return v, err == nil
}

// time reads a time as time.Time's UnmarshalJSON does (RFC 3339).
func (s *jsonScanner) time(t *time.Time) bool {
	s.space()
	start := s.i
	if _, ok := s.string(); !ok {
		return false
	}
	return t.UnmarshalJSON(s.data[start:s.i]) == nil
}
