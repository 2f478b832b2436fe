package portal

import (
	"testing"
	"time"
)

// TestSessionsEnd: a session ends at its expiry whatever happens meanwhile, and at logout; past maxSessions
// the oldest login ends first.
func TestSessionsEnd(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ss := newSessions(time.Hour)
	id, s := ss.start(now)
	if got, ok := ss.get(id, now.Add(time.Hour-time.Second)); !ok || got.csrf != s.csrf || len(s.csrf) < 40 || len(id) < 40 {
		t.Fatalf("a live session: %+v %v; want it, with 32-byte random id and CSRF token", got, ok)
	}
	if _, ok := ss.get(id, now.Add(time.Hour)); ok {
		t.Fatal("the session outlived its expiry")
	}
	id, _ = ss.start(now)
	ss.end(id)
	if _, ok := ss.get(id, now); ok {
		t.Fatal("the session outlived its logout")
	}
	first, _ := ss.start(now)
	for i := range maxSessions {
		ss.start(now.Add(time.Duration(i+1) * time.Millisecond))
	}
	if _, ok := ss.get(first, now); ok || len(ss.m) != maxSessions {
		t.Fatalf("%d sessions kept, the oldest still live: %v; want %d and the oldest ended", len(ss.m), ok, maxSessions)
	}
}
