package logline

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func newSealer(t *testing.T, op string) (*Sealer, []byte) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(key, op)
	if err != nil {
		t.Fatal(err)
	}
	return s, key
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := newSealer(t, "op-1")
	now := time.Date(2026, 11, 27, 8, 0, 0, 123456789, time.UTC)
	for _, l := range []Line{
		{Seq: 1, Time: now, Stream: Stdout, Payload: []byte("hello | with | pipes")},
		{Seq: 2, Time: now, Stream: Stderr, Payload: []byte("")},
		{Seq: 3, Time: now, Stream: Stdout, Payload: bytes.Repeat([]byte{0xff, 'x'}, MaxPayload/2)},
		{Seq: 3, Time: now, Stream: EOS, Payload: []byte("42")},
	} {
		rec, err := s.Append(nil, l)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(rec, l.Payload) && len(l.Payload) > 2 {
			t.Errorf("record %q holds its payload in clear", rec)
		}
		got, err := s.Parse(rec)
		if err != nil {
			t.Fatalf("Parse(%q): %v", rec, err)
		}
		if diff := cmp.Diff(l, got, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	s, key := newSealer(t, "op-1")
	other, err := NewSealer(key, "op-2")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Append(nil, Line{Seq: 7, Time: time.Now(), Stream: Stdout, Payload: []byte("secret")})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(string(rec), "|", 4)
	tests := []struct {
		name      string
		sealer    *Sealer
		rec       string
		notRecord bool
	}{
		{"plain text", s, "hello world", true},
		{"bad seq", s, "x|" + parts[1] + "|stdout|" + parts[3], true},
		{"bad time", s, "7|yesterday|stdout|" + parts[3], true},
		{"unknown stream", s, "7|" + parts[1] + "|stdin|" + parts[3], true},
		{"short payload", s, "7|" + parts[1] + "|stdout|AAAA", true},
		{"renumbered", s, "8|" + parts[1] + "|stdout|" + parts[3], false},
		{"moved to stderr", s, "7|" + parts[1] + "|stderr|" + parts[3], false},
		{"other operation", other, string(rec), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.sealer.Parse([]byte(tc.rec))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error", tc.rec)
			}
			if got := errors.Is(err, ErrNotRecord); got != tc.notRecord {
				t.Errorf("Parse(%q) = %v; ErrNotRecord=%v, want %v", tc.rec, err, got, tc.notRecord)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	if code, err := (Line{Stream: EOS, Payload: []byte("3")}).ExitCode(); err != nil || code != 3 {
		t.Errorf("ExitCode = %d, %v; want 3", code, err)
	}
	if _, err := (Line{Stream: Stdout, Payload: []byte("3")}).ExitCode(); err == nil {
		t.Error("ExitCode of a stdout line succeeded")
	}
	if _, err := (Line{Stream: EOS, Payload: []byte("x")}).ExitCode(); err == nil {
		t.Error("ExitCode of a garbled marker succeeded")
	}
	for _, code := range []string{"-1", "256", "4294967296"} {
		if _, err := (Line{Stream: EOS, Payload: []byte(code)}).ExitCode(); err == nil {
			t.Errorf("ExitCode of a marker carrying %s succeeded; the server refuses it", code)
		}
	}
}

// The end-of-stream marker carries the script's usage after its exit code; a marker without one (an older
// runner, a script that did not start) still reads, and a forged or garbled usage is left out, never taken.
func TestEndPayloadUsage(t *testing.T) {
	t.Parallel()
	u := &api.Usage{PeakMemoryBytes: 52428800, CPUSeconds: 1.25, Source: api.UsageCgroup}
	eos := func(p []byte) Line { return Line{Stream: EOS, Payload: p} }
	if code, err := eos(EndPayload(7, u)).ExitCode(); err != nil || code != 7 {
		t.Errorf("ExitCode with usage = %d, %v; want 7", code, err)
	}
	if got, err := eos(EndPayload(7, u)).Usage(); err != nil || !cmp.Equal(got, u) {
		t.Errorf("Usage = %+v, %v; want %+v", got, err, u)
	}
	if got, err := eos(EndPayload(0, nil)).Usage(); err != nil || got != nil || string(EndPayload(0, nil)) != "0" {
		t.Errorf("a marker without usage: payload %q, Usage = %+v, %v", EndPayload(0, nil), got, err)
	}
	for _, bad := range []string{
		`0 {`,
		`0 {"peak_memory_bytes":-1,"cpu_seconds":1,"source":"cgroup"}`,
		`0 {"peak_memory_bytes":1,"cpu_seconds":1e300,"source":"cgroup"}`,
		`0 {"peak_memory_bytes":1,"cpu_seconds":1,"source":"guess"}`,
		`0 {"peak_memory_bytes":1,"cpu_seconds":1,"source":"cgroup","extra":1}`,
		`0 {"peak_memory_bytes":1,"cpu_seconds":1,"source":"cgroup"} trailing`,
	} {
		if got, err := eos([]byte(bad)).Usage(); err == nil {
			t.Errorf("Usage of %q = %+v; want an error", bad, got)
		}
		if code, err := eos([]byte(bad)).ExitCode(); err != nil || code != 0 {
			t.Errorf("ExitCode of %q = %d, %v; the code still reads", bad, code, err)
		}
	}
}

func TestNewSealerKeySize(t *testing.T) {
	t.Parallel()
	if _, err := NewSealer(make([]byte, 16), "op"); err == nil {
		t.Error("NewSealer accepted a 16-byte key")
	}
}

func BenchmarkAppend(b *testing.B) {
	key, _ := NewKey()
	s, _ := NewSealer(key, "op")
	l := Line{Seq: 1, Time: time.Now(), Stream: Stdout, Payload: []byte("a typical line of deployment output, about eighty bytes long.....")}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = s.Append(buf[:0], l)
	}
}

func BenchmarkParseTo(b *testing.B) {
	key, _ := NewKey()
	s, _ := NewSealer(key, "op")
	rec, _ := s.Append(nil, Line{Seq: 123456, Time: time.Now(), Stream: Stdout, Payload: []byte("a typical line of deployment output, about eighty bytes long.....")})
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if _, buf, err = s.ParseTo(buf, rec); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseToReusesItsBuffer: records opened one after another into one buffer come out right.
func TestParseToReusesItsBuffer(t *testing.T) {
	t.Parallel()
	s, _ := newSealer(t, "op-1")
	var buf []byte
	for i, p := range []string{"short", strings.Repeat("long payload ", 100), "", "x|y|z"} {
		rec, err := s.Append(nil, Line{Seq: int64(i + 1), Time: time.Unix(int64(i), 5).UTC(), Stream: Stderr, Payload: []byte(p)})
		if err != nil {
			t.Fatal(err)
		}
		var l Line
		l, buf, err = s.ParseTo(buf, append(rec, '\r'))
		if err != nil || string(l.Payload) != p || l.Seq != int64(i+1) || l.Stream != Stderr || !l.Time.Equal(time.Unix(int64(i), 5)) {
			t.Fatalf("record %d: %+v, %v", i, l, err)
		}
	}
}

// TestParseTimeMatchesTimeParse: the fast form and every other input give what time.Parse gives.
func TestParseTimeMatchesTimeParse(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2026-11-27T10:31:06.123456789Z", "2026-11-27T10:31:06Z", "2026-11-27T10:31:06.1Z", "2024-02-29T23:59:59.5Z",
		"2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-32T00:00:00Z", "2026-01-01T24:00:00Z",
		"2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1234567891Z",
		"2026-01-01T00:00:00+02:00", "2026-01-01t00:00:00Z", "0000-01-01T00:00:00Z", "2026-1-01T00:00:00Z", "+026-01-01T00:00:00Z",
		"2026-01-01T00:00:0aZ", "", "yesterday"} {
		checkParseTime(t, s)
	}
}

func checkParseTime(t *testing.T, s string) {
	want, werr := time.Parse(time.RFC3339Nano, s)
	got, gerr := ParseTime([]byte(s))
	if (werr != nil) != (gerr != nil) || got != want {
		t.Errorf("ParseTime(%q) = %v, %v; time.Parse = %v, %v", s, got, gerr, want, werr)
	}
}

func FuzzParseTime(f *testing.F) {
	f.Add("2026-11-27T10:31:06.123456789Z")
	f.Add("2026-02-29T00:00:00Z")
	f.Fuzz(checkParseTime)
}

func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"1", "007", "+5", "-0", "-3", "", "x", "99999999999999999999", "123456789012345678"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, werr := strconv.ParseInt(s, 10, 64)
		got, ok := parseSeq([]byte(s))
		if ok != (werr == nil) || (ok && got != want) {
			t.Errorf("parseSeq(%q) = %d, %v; strconv = %d, %v", s, got, ok, want, werr)
		}
	})
}

// TestNoncesUnique: the records of one Sealer, and of two Sealers of the same key (a retried pod), carry
// distinct nonces, and each opens.
func TestNoncesUnique(t *testing.T) {
	key, _ := NewKey()
	seen := map[string]bool{}
	for range 2 {
		s, err := NewSealer(key, "op")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			l := Line{Seq: int64(i + 1), Time: time.Now(), Stream: Stdout, Payload: []byte("same text")}
			rec, err := s.Append(nil, l)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Parse(rec); err != nil {
				t.Fatalf("record %d does not open: %v", i+1, err)
			}
			_, payload, _ := bytes.Cut(rec[bytes.LastIndexByte(rec, '|'):], []byte("|"))
			sealed, err := base64.RawStdEncoding.DecodeString(string(payload))
			if err != nil {
				t.Fatal(err)
			}
			if nonce := string(sealed[:12]); seen[nonce] {
				t.Fatalf("record %d repeats a nonce", i+1)
			} else {
				seen[nonce] = true
			}
		}
	}
}
