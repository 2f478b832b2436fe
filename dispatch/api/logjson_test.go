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

// logRecords are NDJSON records of a log stream: the server's own and variants the fast path must read as
// encoding/json does or leave to it.
var logRecords = []string{
	`{"line":{"pos":12,"seq":1,"time":"2026-11-27T10:31:06.123456789Z","stream":"stdout","text":"hello"}}`,
	`{"line":{"pos":13,"seq":0,"time":"2026-11-27T10:31:06Z","stream":"system","text":"a \u003cb\u003e \"q\" \\ é\n"}}`,
	` { "line" : { "text" : "wörld ✓" , "pos" : 1 } } `,
	`{"line":{}}`,
	`{"end":{"state":"succeeded","exit_code":0}}`,
	`{"line":null}`,
	`{"line":{"pos":1},"line":{"pos":2}}`,
	`{"line":{"pos":1,"pos":2}}`,
	`{"Line":{"pos":1}}`,
	`{"line":{"pos":1,"extra":true}}`,
	`{"line":{"pos":1.5}}`,
	`{"line":{"seq":-0}}`,
	`{"line":{"seq":007}}`,
	`{"line":{"time":"2026-02-30T00:00:00Z"}}`,
	`{"line":{"text":"bad \xff"}}`,
	`{"line":{"text":"\ud83d\ude00 pair"}}`,
	`{"line":{"pos":1}} trailing`,
	`{"line":{"pos":1}`,
	`{}`,
	``,
}

func checkLogEvent(t *testing.T, data []byte) {
	var fast, general LogEvent
	ok := DecodeLogEvent(data, &fast)
	err := json.Unmarshal(data, &general)
	if !ok {
		return // encoding/json decodes it
	}
	if err != nil {
		t.Fatalf("%q: DecodeLogEvent took it, json.Unmarshal says %v", data, err)
	}
	if general.Line == nil || fast.Line == nil || *general.Line != *fast.Line || fast.End != nil {
		t.Fatalf("%q: DecodeLogEvent = %+v, json.Unmarshal = %+v", data, fast.Line, general.Line)
	}
}

func TestDecodeLogEventMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, r := range logRecords {
		checkLogEvent(t, []byte(r))
	}
	var ev LogEvent
	if !DecodeLogEvent([]byte(logRecords[0]), &ev) || ev.Line.Text != "hello" || ev.Line.Pos != 12 {
		t.Errorf("the server's record missed the fast path: %+v", ev.Line)
	}
}

func FuzzDecodeLogEvent(f *testing.F) {
	for _, r := range logRecords {
		f.Add([]byte(r))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkLogEvent(t, data) })
}

// TestAppendJSONRoundTrips: what AppendJSON writes, DecodeLogEvent reads back unchanged.
func TestAppendJSONRoundTrips(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"", "plain", "<a href=\"x\">&amp;</a>", "tab\t\x00", "ü ✓ \u2028"} {
		l := LogLine{Pos: 5, Seq: 3, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Stream: StreamStderr, Text: text}
		b, err := l.AppendJSON([]byte(`{"line":`))
		if err != nil {
			t.Fatal(err)
		}
		var ev LogEvent
		if !DecodeLogEvent(append(b, '}'), &ev) || *ev.Line != l {
			t.Errorf("round trip of %q: got %+v", text, ev.Line)
		}
	}
}

func benchLines() []LogLine {
	lines := make([]LogLine, 5000)
	now := time.Date(2026, 11, 27, 10, 31, 6, 0, time.UTC)
	for i := range lines {
		lines[i] = LogLine{Pos: int64(1e6 + i), Seq: int64(i + 1), Time: now.Add(time.Duration(i) * 1234), Stream: StreamStdout, Text: "a line of deployment output " + time.Duration(i).String()}
	}
	return lines
}

// BenchmarkLogLineJSON: encoding and decoding a line, by hand and with encoding/json, per line.
func BenchmarkLogLineJSON(b *testing.B) {
	lines := benchLines()
	var records [][]byte
	for _, l := range lines {
		r, _ := json.Marshal(LogEvent{Line: &l})
		records = append(records, r)
	}
	perLine := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/line")
	}
	b.Run("encode/AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			for _, l := range lines {
				buf, _ = l.AppendJSON(buf[:0])
			}
		}
		perLine(b)
	})
	b.Run("encode/json.Marshal", func(b *testing.B) {
		for b.Loop() {
			for _, l := range lines {
				_, _ = json.Marshal(l)
			}
		}
		perLine(b)
	})
	b.Run("decode/DecodeLogEvent", func(b *testing.B) {
		for b.Loop() {
			for _, r := range records {
				var ev LogEvent
				if !DecodeLogEvent(r, &ev) {
					b.Fatal("missed the fast path")
				}
			}
		}
		perLine(b)
	})
	b.Run("decode/json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			for _, r := range records {
				var ev LogEvent
				if err := json.Unmarshal(r, &ev); err != nil {
					b.Fatal(err)
				}
			}
		}
		perLine(b)
	})
}
