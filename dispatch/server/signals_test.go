package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// TestOutbox: what waits to be published goes out once per round trip: tickets each (each is one
// operation), the other signals once however often they came; past maxOutbox, or after a failed publish,
// one wake.All instead.
func TestOutbox(t *testing.T) {
	ready := func(id string) wake.Signal {
		return wake.Signal{Kind: wake.Ready, Ticket: wake.Ticket{ID: id, Pool: "p"}}
	}
	lines := wake.Signal{Kind: wake.Lines, ID: "op-1"}
	all := []wake.Signal{{Kind: wake.All}}
	many := make([]wake.Signal, maxOutbox+1)
	for i := range many {
		many[i] = ready("op")
	}
	for _, c := range []struct {
		name   string
		in     []wake.Signal
		failed bool
		want   []wake.Signal
	}{
		{"tickets each, lines once", []wake.Signal{ready("a"), lines, lines, ready("b"), {Kind: wake.Ended, ID: "op-1"}},
			false, []wake.Signal{ready("a"), lines, ready("b"), {Kind: wake.Ended, ID: "op-1"}}},
		{"too many", many, false, all},
		{"after a failed publish", []wake.Signal{lines}, true, all},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{out: newOutbox()}
			if c.failed {
				s.out.failed()
			}
			s.signal(c.in...)
			if diff := cmp.Diff(c.want, s.out.take()); diff != "" {
				t.Errorf("published (-want +got):\n%s", diff)
			}
			s.signal(lines)
			if diff := cmp.Diff([]wake.Signal{lines}, s.out.take()); diff != "" {
				t.Errorf("the next round trip (-want +got):\n%s", diff)
			}
		})
	}
}
