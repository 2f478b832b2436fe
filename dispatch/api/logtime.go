package api

import "time"

// timeCache speeds up writing and reading the RFC 3339 times of a run of log lines, which mostly fall in the
// same second: it keeps the text of one UTC second ("2006-01-02T15:04:05") with its Unix time, so that only
// the fraction is written or read for the lines of that second. The text and the second always come from
// the time package itself (a full format or parse), so the results are the time package's.
type timeCache struct {
	sec  int64
	text string
}

const secondText = len("2006-01-02T15:04:05")

// appendTime appends what t.AppendText appends (RFC 3339 with nanoseconds); c may be nil.
func (c *timeCache) appendTime(dst []byte, t time.Time) ([]byte, error) {
	if c == nil || t.Location() != time.UTC {
		return t.AppendText(dst)
	}
	sec := t.Unix()
	if c.text == "" || sec != c.sec {
		start := len(dst)
		dst, err := t.AppendText(dst)
		if err == nil && len(dst)-start > secondText {
			c.sec, c.text = sec, string(dst[start:start+secondText])
		}
		return dst, err
	}
	dst = append(dst, c.text...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		dst = append(dst, frac[:n]...)
	}
	return append(dst, 'Z'), nil
}

// parse reads quoted (a JSON string: the time between quotes) as time.Time's UnmarshalJSON does.
func (c *timeCache) parse(quoted []byte) (time.Time, bool) {
	s := quoted[1 : len(quoted)-1]
	if c.text != "" && len(s) > secondText && s[len(s)-1] == 'Z' && string(s[:secondText]) == c.text {
		if ns, ok := fraction(s[secondText : len(s)-1]); ok {
			return time.Unix(c.sec, ns).UTC(), true
		}
	}
	var t time.Time
	if t.UnmarshalJSON(quoted) != nil {
		return t, false
	}
	if t.Location() == time.UTC && len(s) > secondText && s[len(s)-1] == 'Z' && (s[secondText] == '.' || s[secondText] == 'Z') {
		c.sec, c.text = t.Unix(), string(s[:secondText])
	}
	return t, true
}

// fraction reads the fraction of a second RFC 3339 allows after the seconds: nothing, or '.' and 1 to 9
// digits. It reports false for anything else (the time package decides about those).
func fraction(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, true
	}
	if b[0] != '.' || len(b) < 2 || len(b) > 10 {
		return 0, false
	}
	var ns int64
	for _, d := range b[1:] {
		if d < '0' || d > '9' {
			return 0, false
		}
		ns = ns*10 + int64(d-'0')
	}
	for range 10 - len(b) {
		ns *= 10
	}
	return ns, true
}

// TimeText appends times as AppendFormat(dst, time.RFC3339Nano) does, faster for a run of times that mostly
// share their second (the runner's records): it keeps the text of the current second. The zero value is
// ready; it is not safe for concurrent use.
type TimeText struct{ c timeCache }

// Append appends t in RFC 3339 with nanoseconds, trailing zeros of the fraction dropped.
func (tt *TimeText) Append(dst []byte, t time.Time) []byte {
	if t.Year() < 0 || t.Year() > 9999 {
		return t.AppendFormat(dst, time.RFC3339Nano) // AppendText refuses these years; the format does not
	}
	dst, _ = tt.c.appendTime(dst, t) // an error only for years outside 0..9999
	return dst
}
