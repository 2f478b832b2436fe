package api

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAppendJSONMatchesEncodingJSON: the hand-written encoding is byte for byte what encoding/json writes,
// for texts that need no escaping and for every kind that does.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	texts := []string{"", "plain", "12345", "quote \" and \\ backslash", "tab\tnewline\ncr\r", "nul \x00 bell \x07",
		"<html> & </html>", "ünïcödé ✓ 日本", "bad utf-8 \xff\xfe end", "truncated \xe2\x82", "line\u2028sep\u2029",
		"emoji 😀", "\x7f del"}
	times := []time.Time{{}, time.Date(2026, 11, 27, 10, 31, 6, 123456789, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 500, time.FixedZone("x", 2*3600+30*60)), time.Unix(0, 1).In(time.Local)}
	for _, text := range texts {
		for _, tm := range times {
			for _, l := range []LogLine{{Seq: 7, Time: tm, Stream: StreamStdout, Text: text}, {Pos: 99, Seq: 0, Time: tm, Stream: text, Text: text}} {
				want, err := json.Marshal(l)
				if err != nil {
					t.Fatal(err)
				}
				got, err := l.AppendJSON([]byte("prefix"))
				if err != nil || string(got) != "prefix"+string(want) {
					t.Errorf("AppendJSON(%+v) =\n%s, %v\nwant\n%s", l, got, err, want)
				}
			}
		}
	}
	if _, err := (LogLine{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}).AppendJSON(nil); err == nil {
		t.Error("a year beyond 9999 was encoded; encoding/json refuses it")
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add(int64(1), int64(0), "stdout", "text", int64(0))
	f.Add(int64(0), int64(5), "system", "<\xff\u2028\"", int64(1e18))
	f.Fuzz(func(t *testing.T, pos, seq int64, stream, text string, nanos int64) {
		l := LogLine{Pos: pos, Seq: seq, Time: time.Unix(0, nanos).UTC(), Stream: stream, Text: text}
		want, werr := json.Marshal(l)
		got, gerr := l.AppendJSON(nil)
		if (werr != nil) != (gerr != nil) || (werr == nil && string(got) != string(want)) {
			t.Fatalf("AppendJSON = %s, %v; json.Marshal = %s, %v", got, gerr, want, werr)
		}
	})
}
