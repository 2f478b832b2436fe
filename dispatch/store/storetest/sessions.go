package storetest

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testSessions: a portal login is found by its hash while live, not at or after its end nor after its
// logout; starting one deletes the ended ones, and past MaxSessions the ones ending first end.
func testSessions(t *testing.T, b *bundle) {
	hash := func(i int) []byte { h := sha256.Sum256([]byte(fmt.Sprint("cookie ", i))); return h[:] }
	start := func(i int, started time.Time, ttl time.Duration) {
		t.Helper()
		if err := b.s.StartSession(b.ctx, store.Session{Hash: hash(i), CSRF: fmt.Sprint("csrf ", i), Started: started,
			Expires: started.Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	live := func(i int, at time.Time) bool {
		t.Helper()
		s, err := b.s.Session(b.ctx, hash(i), at)
		if err != nil {
			wantErr(t, err, store.ErrNotFound)
			return false
		}
		if s.CSRF != fmt.Sprint("csrf ", i) {
			t.Fatalf("session %d: CSRF %q", i, s.CSRF)
		}
		return true
	}
	now := b.now
	start(1, now, time.Hour)
	if !live(1, now.Add(time.Hour-time.Nanosecond)) || live(1, now.Add(time.Hour)) {
		t.Fatal("a login is live until its end, not at it")
	}
	if live(2, now) {
		t.Fatal("a login never started is live")
	}
	start(2, now, time.Hour)
	if err := b.s.EndSession(b.ctx, hash(2)); err != nil {
		t.Fatal(err)
	}
	if err := b.s.EndSession(b.ctx, hash(2)); err != nil {
		t.Fatalf("ending an ended login: %v", err)
	}
	if live(2, now) {
		t.Fatal("a login outlived its logout")
	}

	// Past MaxSessions the logins ending first end; the ended one (1, at now+1h) is deleted on the way.
	later := now.Add(2 * time.Hour)
	for i := range store.MaxSessions {
		start(100+i, later, time.Hour+time.Duration(i)*time.Millisecond)
	}
	start(99, later, 2*time.Hour)
	if live(100, later) || !live(101, later) || !live(99, later) || !live(100+store.MaxSessions-1, later) {
		t.Fatal("past MaxSessions live logins, the one ending first should end and the others stay")
	}
}
