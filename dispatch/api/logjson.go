package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the JSON encoding of l to dst: the same bytes as json.Marshal(l), without reflection, for
// the log paths that move thousands of lines per request.
func (l LogLine) AppendJSON(dst []byte) ([]byte, error) { return l.appendJSON(dst, nil) }

// LineEncoder appends the JSON encoding of log lines as AppendJSON does, faster for a run of lines: it
// writes the date and time of a second once and reuses it for the lines of that second. The zero value is
// ready; it is not safe for concurrent use.
type LineEncoder struct{ times timeCache }

// Append appends the JSON encoding of l to dst, the bytes json.Marshal(l) writes.
func (e *LineEncoder) Append(dst []byte, l LogLine) ([]byte, error) {
	return l.appendJSON(dst, &e.times)
}

func (l LogLine) appendJSON(dst []byte, times *timeCache) ([]byte, error) {
	if l.Pos != 0 {
		dst = append(dst, `{"pos":`...)
		dst = strconv.AppendInt(dst, l.Pos, 10)
		dst = append(dst, `,"seq":`...)
	} else {
		dst = append(dst, `{"seq":`...)
	}
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, `,"time":"`...)
	dst, err := times.appendTime(dst, l.Time) // what Time.MarshalJSON writes between its quotes
	if err != nil {
		return dst, fmt.Errorf("encoding the time of line %d: %w", l.Seq, err)
	}
	dst = append(dst, `","stream":`...)
	if dst, err = appendJSONString(dst, l.Stream); err != nil {
		return dst, err
	}
	dst = append(dst, `,"text":`...)
	if dst, err = appendJSONString(dst, l.Text); err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

// appendJSONString appends s as encoding/json writes it. Text that needs no escaping (printable ASCII and
// valid UTF-8, except the characters encoding/json escapes: quote, backslash, <, >, &, U+2028 and U+2029) is
// copied; anything else goes through json.Marshal.
func appendJSONString(dst []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return marshalString(dst, s)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			return marshalString(dst, s)
		}
		i += size
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"'), nil
}

func marshalString(dst []byte, s string) ([]byte, error) {
	b, err := json.Marshal(s)
	return append(dst, b...), err
}

// DecodeAppendLogs decodes data into req if data is an append request in the subset of JSON it reads without
// reflection: the known fields, each at most once, integers in plain form, strings in valid UTF-8 without
// surrogate escapes, RFC 3339
// times, any white space. It reports false for anything else (unknown or repeated fields, nulls, exponents,
// malformed JSON, ...); decode such a body with encoding/json, which reads it or says what is wrong. When it
// reports true, req holds what encoding/json would decode. expect sizes the lines slice (the most lines a
// batch may hold). The strings in req share one copy of data.
func DecodeAppendLogs(data []byte, req *AppendLogsRequest, expect int) bool {
	sc := jsonScanner{data: data, str: string(data)}
	*req = AppendLogsRequest{}
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
			req.Lines = make([]LogLine, 0, min(len(data)/60, expect)) // an encoded line takes at least 60 bytes
			return sc.array(func() bool {
				var l LogLine
				ok := sc.compactLogLine(&l) || sc.logLine(&l)
				req.Lines = append(req.Lines, l)
				return ok
			})
		}
		return false
	})
	return ok && sc.end()
}

// DecodePodLogs decodes data into req if data is a pod's push in the subset of JSON DecodeAppendLogs reads
// (one "records" field, an array of strings), and reports false otherwise: decode such a body with
// encoding/json. expect sizes the records slice (the most records a push may hold). The strings in req share
// one copy of data.
func DecodePodLogs(data []byte, req *PodLogsRequest, expect int) bool {
	sc := jsonScanner{data: data, str: string(data)}
	*req = PodLogsRequest{}
	seen := false
	ok := sc.object(func(key string) bool {
		if key != "records" || seen {
			return false
		}
		seen = true
		req.Records = make([]string, 0, min(len(data)/40, expect)) // a record takes more than 40 bytes
		return sc.array(func() bool {
			rec, ok := sc.string()
			req.Records = append(req.Records, rec)
			return ok
		})
	})
	return ok && sc.end()
}

// DecodeLogEvent decodes one NDJSON record of a log stream into ev if it is a line record in the subset
// DecodeAppendLogs reads, and reports false otherwise (end records included): decode those with
// encoding/json. The strings in ev share one copy of data.
func DecodeLogEvent(data []byte, ev *LogEvent) bool {
	sc := jsonScanner{data: data, str: string(data)}
	*ev = LogEvent{}
	seen := false
	ok := sc.object(func(key string) bool {
		if key != "line" || seen {
			return false
		}
		seen = true
		ev.Line = &LogLine{}
		return sc.logLine(ev.Line)
	})
	return ok && seen && sc.end()
}

// jsonScanner reads the subset of JSON the fast decoders accept. Every method reports false for anything
// outside it; the caller then hands the whole input to encoding/json.
type jsonScanner struct {
	data  []byte
	str   string // the same bytes: values are cut from it without copying
	i     int
	times timeCache // the lines of a batch mostly share their second
}

// logLine reads a LogLine object.
func (s *jsonScanner) logLine(l *LogLine) bool {
	var seen [5]bool
	return s.object(func(key string) bool {
		i := -1
		switch key {
		case "pos":
			i = 0
		case "seq":
			i = 1
		case "time":
			i = 2
		case "stream":
			i = 3
		case "text":
			i = 4
		}
		if i < 0 || seen[i] {
			return false
		}
		seen[i] = true
		var ok bool
		switch i {
		case 0:
			l.Pos, ok = s.int()
		case 1:
			l.Seq, ok = s.int()
		case 2:
			ok = s.time(&l.Time)
		case 3:
			l.Stream, ok = s.string()
			l.Stream = internStream(l.Stream)
		case 4:
			l.Text, ok = s.string()
		}
		return ok
	})
}

// compactLogLine reads a LogLine object written as the worker's client writes it (LineEncoder: the fields
// seq, time, stream and text in that order, no white space): it matches the keys as literals instead of
// decoding each. For anything else it reports false with the scanner where it was, for logLine to read.
func (s *jsonScanner) compactLogLine(l *LogLine) bool {
	start := s.i
	ok := s.literal(`{"seq":`)
	if ok {
		l.Seq, ok = s.int()
	}
	ok = ok && s.literal(`,"time":`) && s.time(&l.Time) && s.literal(`,"stream":`)
	if ok {
		l.Stream, ok = s.string()
		l.Stream = internStream(l.Stream)
	}
	ok = ok && s.literal(`,"text":`)
	if ok {
		l.Text, ok = s.string()
	}
	if ok = ok && s.literal("}"); !ok {
		*l, s.i = LogLine{}, start
	}
	return ok
}

// literal consumes lit if the input continues with it, white space not skipped.
func (s *jsonScanner) literal(lit string) bool {
	if !strings.HasPrefix(s.str[s.i:], lit) {
		return false
	}
	s.i += len(lit)
	return true
}

// internStream returns the constant for a known stream name, so a line does not hold the input by it.
func internStream(s string) string {
	switch s {
	case StreamStdout:
		return StreamStdout
	case StreamStderr:
		return StreamStderr
	case StreamSystem:
		return StreamSystem
	}
	return s
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

// string reads a string without escapes and in valid UTF-8, or one with escapes through encoding/json.
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
				if surrogateEscape(raw) {
					return "", false // encoding/json replaces a lone surrogate; the strict decoder refuses it
				}
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

// surrogateEscape reports whether the raw text of a string holds a \u escape of a surrogate (paired or not).
func surrogateEscape(raw string) bool {
	for i := 0; i+3 < len(raw); i++ {
		if raw[i] == '\\' {
			if raw[i+1] == 'u' && (raw[i+2] == 'd' || raw[i+2] == 'D') && strings.IndexByte("89abcdefABCDEF", raw[i+3]) >= 0 {
				return true
			}
			i++ // the escaped byte
		}
	}
	return false
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

// time reads a time as time.Time's UnmarshalJSON does (RFC 3339; given the raw JSON string, as encoding/json
// gives it).
func (s *jsonScanner) time(t *time.Time) bool {
	s.space()
	start := s.i
	if _, ok := s.string(); !ok {
		return false
	}
	var ok bool
	*t, ok = s.times.parse(s.data[start:s.i])
	return ok
}
