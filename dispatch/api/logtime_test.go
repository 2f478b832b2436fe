package api

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzTimeCache: a run of times through one cache (the second one often in the same second as the first) is
// written as Time.AppendText writes each, and read as Time.UnmarshalJSON reads each, whatever the cache held.
func FuzzTimeCache(f *testing.F) {
	f.Add(int64(1_796_000_000_123_456_789), int64(5), int64(999_999_999), "2026-11-27T10:31:06.5Z")
	f.Add(int64(0), int64(1e9), int64(-1), "2026-11-27T10:31:06Z")
	f.Add(int64(-1), int64(0), int64(10), "2026-11-27T10:31:06.1234567891Z")
	f.Add(int64(1_796_000_000_000_000_000), int64(100), int64(1), "2026-11-27T10:31:06.+1Z")
	f.Fuzz(func(t *testing.T, base, d1, d2 int64, text string) {
		times := []time.Time{time.Unix(0, base).UTC(), time.Unix(0, base+d1).UTC(), time.Unix(0, base+d2).UTC(),
			time.Unix(0, base).In(time.FixedZone("x", 3600))}
		var enc, dec timeCache
		for _, tm := range times {
			want, werr := tm.AppendText(nil)
			got, gerr := enc.appendTime(nil, tm)
			if (werr != nil) != (gerr != nil) || string(got) != string(want) {
				t.Fatalf("appendTime(%v) = %q, %v; AppendText = %q, %v", tm, got, gerr, want, werr)
			}
			if werr != nil {
				continue
			}
			quoted := []byte(`"` + string(want) + `"`)
			p, ok := dec.parse(quoted)
			if !ok || !p.Equal(tm) || p.Location() != time.UTC && tm.Location() == time.UTC {
				t.Fatalf("parse(%s) = %v, %v; want %v", quoted, p, ok, tm)
			}
			// A text in the cached second, well formed or not, reads as UnmarshalJSON reads it.
			for _, s := range []string{text, string(want[:min(len(want), secondText)]) + text} {
				b, _ := json.Marshal(s)
				var want time.Time
				werr := want.UnmarshalJSON(b)
				got, ok := dec.parse(b)
				if ok != (werr == nil) || (ok && (got != want)) {
					t.Fatalf("parse(%s) = %v, %v; UnmarshalJSON = %v, %v", b, got, ok, want, werr)
				}
			}
		}
	})
}

// BenchmarkLineEncoder: a run of lines 2.5 µs apart (as `seq` prints them) encoded one by one, beside
// AppendJSON (each line on its own).
func BenchmarkLineEncoder(b *testing.B) {
	lines := benchLines()
	b.Run("encoder", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			var e LineEncoder
			for _, l := range lines {
				buf, _ = e.Append(buf[:0], l)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/line")
	})
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			for _, l := range lines {
				buf, _ = l.AppendJSON(buf[:0])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/line")
	})
}

// FuzzTimeText: a run of times through one TimeText is written as AppendFormat(RFC3339Nano) writes each,
// years outside 0..9999 and other zones included.
func FuzzTimeText(f *testing.F) {
	f.Add(int64(1_796_000_000_123_456_789), int64(5), int64(999_999_999))
	f.Add(int64(0), int64(1e9), int64(-1))
	f.Add(int64(-62_167_219_200_000_000_000/1000), int64(-1), int64(100))
	f.Fuzz(func(t *testing.T, base, d1, d2 int64) {
		times := []time.Time{time.Unix(0, base).UTC(), time.Unix(0, base+d1).UTC(), time.Unix(0, base+d2).UTC(),
			time.Unix(0, base).In(time.FixedZone("x", 3600)), time.Unix(base, d1).UTC(), time.Unix(-base, d2).UTC()}
		var tt TimeText
		for _, tm := range times {
			if got, want := tt.Append(nil, tm), tm.AppendFormat(nil, time.RFC3339Nano); string(got) != string(want) {
				t.Fatalf("Append(%v) = %q; AppendFormat = %q", tm, got, want)
			}
		}
	})
}
