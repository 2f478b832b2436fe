package store

import (
	"fmt"
	"math"
	"strconv"
	"strings"

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
