package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// listening is a bus listening in the background: what it hears arrives on c, in order.
type listening struct {
	bus *bus
	c   chan wake.Signal
}

// listen opens a store on url and listens on its bus until the test ends; it returns once the listener has
// said it listens (its first wake.All).
func listen(t *testing.T, url string) (*Store, *listening) {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	l := &listening{bus: s.Bus().(*bus), c: make(chan wake.Signal, 10000)}
	l.bus.reconnect = 10 * time.Millisecond // the reconnect test does not wait a second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.bus.Listen(ctx, func(sig wake.Signal) { l.c <- sig }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
		s.Close()
	})
	l.next(t, "the listener to start", wake.Signal{Kind: wake.All})
	return s, l
}

// next waits for the next signal heard and checks it is want.
func (l *listening) next(t *testing.T, what string, want wake.Signal) {
	t.Helper()
	select {
	case got := <-l.c:
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("waiting for %s: heard (-want +got):\n%s", what, diff)
		}
	case <-time.After(time.Minute): // a guard against a hang, far beyond what any wait here takes
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestBusCarriesSignals: every kind of signal one server publishes reaches another server's listener, in
// order; a server does not hear its own.
func TestBusCarriesSignals(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	_, a := listen(t, url)
	_, b := listen(t, url)
	sigs := []wake.Signal{
		{Kind: wake.Ready, Ticket: wake.Ticket{ID: "op-1", Pool: "web", Capabilities: []string{"kubernetes-job", "gpu"}, Profile: "big"}},
		{Kind: wake.Ready, Ticket: wake.Ticket{ID: "op-2", Pool: "db"}},
		{Kind: wake.Lines, ID: "op-1"},
		{Kind: wake.Ended, ID: "op-1"},
		{Kind: wake.Worker, ID: "wkr-1"},
		{Kind: wake.Removed, ID: "wkr-2"},
		{Kind: wake.All},
	}
	if err := a.bus.Publish(t.Context(), sigs); err != nil {
		t.Fatal(err)
	}
	for i, want := range sigs {
		b.next(t, fmt.Sprintf("signal %d", i), want)
	}
	// a heard none of its own: the first thing it hears is b's.
	mark := wake.Signal{Kind: wake.Lines, ID: "op-from-b"}
	if err := b.bus.Publish(t.Context(), []wake.Signal{mark}); err != nil {
		t.Fatal(err)
	}
	a.next(t, "the other server's signal", mark)
}

// TestBusPacksManySignals: a burst larger than one notification's payload limit arrives whole (several
// notifications of one statement), and a ticket too large for any notification becomes wake.All.
func TestBusPacksManySignals(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s, _ := listen(t, url)
	_, b := listen(t, url)
	caps := make([]string, 20)
	for i := range caps {
		caps[i] = fmt.Sprintf("capability-%02d", i)
	}
	var sigs []wake.Signal
	for i := range 3000 {
		sigs = append(sigs, wake.Signal{Kind: wake.Ready, Ticket: wake.Ticket{ID: fmt.Sprintf("op-%d", i), Pool: "p", Capabilities: caps}})
	}
	huge := make([]string, 1000)
	for i := range huge {
		huge[i] = strings.Repeat("c", 60) + fmt.Sprint(i)
	}
	sigs = append(sigs, wake.Signal{Kind: wake.Ready, Ticket: wake.Ticket{ID: "op-huge", Pool: "p", Capabilities: huge}})
	pub := s.Bus().(*bus)
	if payloads, _ := pub.payloads(sigs); len(payloads) < 2 {
		t.Fatalf("%d signals packed into %d notifications, want several", len(sigs), len(payloads))
	}
	if err := pub.Publish(t.Context(), sigs); err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		b.next(t, fmt.Sprintf("signal %d", i), sigs[i])
	}
	b.next(t, "the too large ticket, as a wake-up of everyone", wake.Signal{Kind: wake.All})
}

// TestBusReconnectWakesAll: when the listener's connection is lost, it connects again and then wakes every
// waiter once (what was sent meanwhile is lost), and hears what is sent after.
func TestBusReconnectWakesAll(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s, _ := listen(t, url)
	_, b := listen(t, url)
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, listenerName).Scan(&n); err != nil || n != 2 {
		t.Fatalf("terminating the listeners' sessions: %d terminated, %v; want 2", n, err)
	}
	b.next(t, "the wake-up of everyone after reconnecting", wake.Signal{Kind: wake.All})
	after := wake.Signal{Kind: wake.Worker, ID: "wkr-after"}
	if err := s.Bus().Publish(t.Context(), []wake.Signal{after}); err != nil {
		t.Fatal(err)
	}
	b.next(t, "a signal sent after the reconnect", after)
}

// TestExclusively: while one server runs a sweep, another's attempt of the same sweep does not run (and a
// different sweep does); once the first is done, the next attempt runs. fn's error is returned.
func TestExclusively(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	var stores [2]*Store
	for i := range stores {
		s, err := Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	ctx := t.Context()
	var inner, other bool
	var innerErr, otherErr error
	ran, err := stores[0].Exclusively(ctx, "lease-expiry", func(ctx context.Context) error {
		inner, innerErr = stores[1].Exclusively(ctx, "lease-expiry", func(context.Context) error { return nil })
		other, otherErr = stores[1].Exclusively(ctx, "retention", func(context.Context) error { return nil })
		return nil
	})
	if !ran || err != nil || inner || innerErr != nil || !other || otherErr != nil {
		t.Fatalf("Exclusively = %v, %v; the same sweep inside it = %v, %v (want false); another sweep = %v, %v (want true)",
			ran, err, inner, innerErr, other, otherErr)
	}
	boom := errors.New("boom")
	ran, err = stores[1].Exclusively(ctx, "lease-expiry", func(context.Context) error { return boom })
	if !ran || !errors.Is(err, boom) {
		t.Fatalf("Exclusively after the first ended = %v, %v; want true, boom", ran, err)
	}
	// Many at once: never two inside.
	var mu sync.Mutex
	inside, most := 0, 0
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			_, err := stores[i%2].Exclusively(ctx, "retention", func(context.Context) error {
				mu.Lock()
				inside++
				most = max(most, inside)
				mu.Unlock()
				_, err := stores[i%2].pool.Exec(ctx, "SELECT pg_sleep(0.01)")
				mu.Lock()
				inside--
				mu.Unlock()
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most != 1 {
		t.Errorf("%d sweeps ran at once, want 1", most)
	}
}
