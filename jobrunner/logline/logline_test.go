package logline

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
