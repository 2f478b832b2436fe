package wake

import (
	"fmt"
	"testing"
	"time"
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
	q := NewQueue()
	other := q.Wait([]string{"q"}, nil)
	first := q.Wait([]string{"p"}, nil)
	second := q.Wait([]string{"p", "q"}, nil)
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
	q := NewQueue()
	plain := q.Wait([]string{"p"}, []string{"kubernetes-job"})
	docker := q.Wait([]string{"p"}, []string{"kubernetes-job", "docker"})
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
	q := NewQueue()
	a := q.Wait([]string{"p"}, nil)
	b := q.Wait([]string{"p"}, nil)
	q.Notify(Ticket{ID: "op-1", Pool: "p"})
	<-a.C()
	// a leaves without claiming (its poll ended): its ticket goes to b.
	a.Done("", nil)
	if !received(b.C()) {
		t.Fatal("want the ticket passed to b")
	}
	// b took the ticket, but claimed an older operation: op-1 goes on, to c.
	c := q.Wait([]string{"p"}, nil)
	took := b.Take()
	b.Done("op-0", took)
	if !received(c.C()) || c.Take()[0].ID != "op-1" {
		t.Fatal("want op-1 passed to c")
	}
	// A waiter that claimed the ticket's operation passes nothing on.
	d := q.Wait([]string{"p"}, nil)
	c.Done("op-1", []Ticket{{ID: "op-1", Pool: "p"}})
	if received(d.C()) {
		t.Fatal("a claimed ticket was passed on")
	}
	d.Done("", nil)
	c.Done("", nil) // a second Done is harmless
	if n := q.Waiting(); n != 0 {
		t.Fatalf("%d waiters left registered", n)
	}
}

// TestNoLostWakeup has waiters take tickets concurrently. Each waiter re-registers before it lets go of the
// old registration, so a waiter always exists: every ticket must reach exactly one waiter.
func TestNoLostWakeup(t *testing.T) {
	t.Parallel()
	q := NewQueue()
	const waiters, tickets = 8, 2000
	got := make(chan string, 2*tickets)
	stop := make(chan struct{})
	done := make(chan struct{})
	for range waiters {
		w := q.Wait([]string{"p"}, nil)
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-w.C():
					next := q.Wait([]string{"p"}, nil)
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
