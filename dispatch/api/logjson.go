package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the JSON encoding of l to dst: the same bytes as json.Marshal(l), without reflection, for
// the log paths that move thousands of lines per request.
func (l LogLine) AppendJSON(dst []byte) ([]byte, error) {
	if l.Pos != 0 {
		dst = append(dst, `{"pos":`...)
		dst = strconv.AppendInt(dst, l.Pos, 10)
		dst = append(dst, `,"seq":`...)
	} else {
		dst = append(dst, `{"seq":`...)
	}
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, `,"time":"`...)
	dst, err := l.Time.AppendText(dst) // what Time.MarshalJSON writes between its quotes
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
