package wake

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func received(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestNotifyWakesOneMatchingWaiter(t *testing.T) {
	t.Parallel()
	q := NewQueue[string, string]()
	other := q.Wait([]string{"q"}, nil, "", nil)
	first := q.Wait([]string{"p"}, nil, "", nil)
	second := q.Wait([]string{"p", "q"}, nil, "", nil)
	q.Notify(Ticket{ID: "op-1", Pool: "p"})
	if !received(first.C()) || received(second.C()) || received(other.C()) {
		t.Fatal("want only the oldest waiter of pool p woken")
	}
	if got := first.Take(); len(got) != 1 || got[0].ID != "op-1" {
		t.Fatalf("Take = %+v", got)
	}
	q.Notify(Ticket{ID: "op-2", Pool: "p"})
	if !received(first.C()) || received(second.C()) {
		t.Fatal("the first waiter took its ticket, so it is free again and oldest: want it woken")
	}
	q.Notify(Ticket{ID: "op-3", Pool: "p"})
	if !received(second.C()) {
		t.Fatal("the first waiter holds a ticket: want the second woken")
	}
}

func TestNotifyMatchesCapabilities(t *testing.T) {
	t.Parallel()
	q := NewQueue[string, string]()
	plain := q.Wait([]string{"p"}, []string{"kubernetes-job"}, "", nil)
	docker := q.Wait([]string{"p"}, []string{"kubernetes-job", "docker"}, "", nil)
	q.Notify(Ticket{ID: "op-1", Pool: "p", Capabilities: []string{"docker"}})
	if received(plain.C()) || !received(docker.C()) {
		t.Fatal("want the waiter with docker woken, not the other")
	}
	q.Notify(Ticket{ID: "op-2", Pool: "nope"})
	if received(plain.C()) || received(docker.C()) {
		t.Fatal("a ticket for another pool woke someone")
	}
}

func TestDonePassesTicketsOn(t *testing.T) {
	t.Parallel()
	q := NewQueue[string, string]()
	a := q.Wait([]string{"p"}, nil, "", nil)
	b := q.Wait([]string{"p"}, nil, "", nil)
	q.Notify(Ticket{ID: "op-1", Pool: "p"})
	<-a.C()
	// a leaves without claiming (its poll ended): its ticket goes to b.
	a.Done("", nil)
	if !received(b.C()) {
		t.Fatal("want the ticket passed to b")
	}
	// b took the ticket, but claimed an older operation: op-1 goes on, to c.
	c := q.Wait([]string{"p"}, nil, "", nil)
	took := b.Take()
	b.Done("op-0", took)
	if !received(c.C()) || c.Take()[0].ID != "op-1" {
		t.Fatal("want op-1 passed to c")
	}
	// A waiter that claimed the ticket's operation passes nothing on.
	d := q.Wait([]string{"p"}, nil, "", nil)
	c.Done("op-1", []Ticket{{ID: "op-1", Pool: "p"}})
	if received(d.C()) {
		t.Fatal("a claimed ticket was passed on")
	}
	d.Done("", nil)
	c.Done("", nil) // a second Done is harmless
	if n := q.waiting(); n != 0 {
		t.Fatalf("%d waiters left registered", n)
	}
}

// TestNoLostWakeup has waiters take tickets concurrently. Each waiter re-registers before it lets go of the
// old registration, so a waiter always exists: every ticket must reach exactly one waiter.
func TestNoLostWakeup(t *testing.T) {
	t.Parallel()
	q := NewQueue[string, string]()
	const waiters, tickets = 8, 2000
	got := make(chan string, 2*tickets)
	stop := make(chan struct{})
	done := make(chan struct{})
	for range waiters {
		w := q.Wait([]string{"p"}, nil, "", nil)
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-w.C():
					next := q.Wait([]string{"p"}, nil, "", nil)
					for _, tk := range w.Take() {
						got <- tk.ID
					}
					w.Done("", nil)
					w = next
				case <-stop:
					w.Done("", nil)
					return
				}
			}
		}()
	}
	for i := range tickets {
		q.Notify(Ticket{ID: fmt.Sprint(i), Pool: "p"})
	}
	seen := map[string]int{}
	timeout := time.After(20 * time.Second)
	for n := 0; n < tickets; n++ {
		select {
		case id := <-got:
			seen[id]++
		case <-timeout:
			t.Fatalf("only %d of %d tickets woke a waiter", len(seen), tickets)
		}
	}
	close(stop)
	for range waiters {
		<-done
	}
	close(got)
	for id := range got {
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("ticket %s reached %d waiters", id, n)
		}
	}
	if len(seen) != tickets {
		t.Errorf("%d distinct tickets arrived, want %d", len(seen), tickets)
	}
}

func TestReserveDeliverRelease(t *testing.T) {
	t.Parallel()
	q := NewQueue[string, string]()
	ticketed := q.Wait([]string{"p"}, nil, "ticketed", nil)
	q.Notify(Ticket{ID: "op-0", Pool: "p"}) // ticketed now holds a ticket: not idle
	gone := make(chan struct{})
	close(gone)
	ended := q.Wait([]string{"p"}, nil, "ended", gone) // its request ended: never reserved
	busy := q.Wait([]string{"p"}, nil, "busy", nil)    // claiming, not asleep: never reserved
	idle := q.Wait([]string{"p"}, nil, "idle", nil)
	for _, w := range []*Waiter[string, string]{ticketed, ended, idle} {
		w.Idle()
	}
	if q.Reserve("other", nil) != nil {
		t.Fatal("reserved a waiter for a pool nobody waits on")
	}
	w := q.Reserve("p", nil)
	if w != idle {
		t.Fatalf("Reserve = %v, want the idle waiter", w.Data)
	}
	w.Deliver("lease-1")
	if !received(w.C()) || !delivered(w, "lease-1") || !delivered(w, "") {
		t.Fatal("want the delivery once, with a wake-up")
	}
	if got, ok := w.Done("op-1", nil); ok {
		t.Fatalf("Done after taking the delivery returned %v", got)
	}

	// A reserved waiter whose poll ends waits in Done for the hand-off, and gets it.
	r := q.Wait([]string{"p"}, nil, "r", nil)
	r.Idle()
	if q.Reserve("p", nil) != r {
		t.Fatal("want r reserved")
	}
	got := make(chan string)
	go func() { v, _ := r.Done("", nil); got <- v }()
	r.Deliver("lease-2")
	if v := <-got; v != "lease-2" {
		t.Fatalf("Done of a reserved waiter returned %v, want the lease delivered meanwhile", v)
	}

	// Release puts a waiter back, unless it already left.
	x := q.Wait([]string{"p"}, nil, "x", nil)
	x.Idle()
	if q.Reserve("p", nil) != x {
		t.Fatal("want x reserved")
	}
	// x wakes to claim while the hand-off is under way: Busy waits for it.
	go x.Deliver("lease-3")
	if v, _ := x.Busy(); v != "lease-3" {
		t.Fatalf("Busy during a hand-off returned %v", v)
	}
	x.Idle()
	if q.Reserve("p", nil) != nil {
		t.Fatal("a delivered waiter is back in the queue")
	}
	x.Done("op-3", nil)

	y := q.Wait([]string{"p"}, nil, "y", nil)
	y.Idle()
	if q.Reserve("p", nil) != y {
		t.Fatal("want y reserved")
	}
	y.Release()
	if v, ok := y.Busy(); ok {
		t.Fatalf("Busy after a release returned %v", v)
	}
	y.Idle()
	if q.Reserve("p", nil) != y {
		t.Fatal("a released waiter is not back in the queue")
	}
	go y.Release()
	if v, ok := y.Done("", nil); ok {
		t.Fatalf("Done after a release returned %v", v)
	}
	if q.Reserve("p", nil) != nil {
		t.Fatal("a waiter that left came back")
	}
	ticketed.Done("", ticketed.Take())
	ended.Done("", nil)
	busy.Done("", nil)
	if n := q.waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestBroadcast(t *testing.T) {
	t.Parallel()
	b := NewBroadcast()
	c1 := b.Watch("op-1")
	c2 := b.Watch("op-1")
	other := b.Watch("op-2")
	b.Signal("op-1")
	if !received(c1) || !received(c2) || received(other) {
		t.Fatal("want both watchers of op-1 woken and op-2's not")
	}
	c3 := b.Watch("op-1")
	if received(c3) {
		t.Fatal("a new watch must wait for the next signal")
	}
	b.Signal("op-none") // nobody watches: nothing happens
}

// delivered says whether w holds a delivery equal to want; for "" whether it holds none.
func delivered(w *Waiter[string, string], want string) bool {
	v, ok := w.Delivered()
	if want == "" {
		return !ok
	}
	return ok && v == want
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
