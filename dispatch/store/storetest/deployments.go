package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testDeploymentSucceeds(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two", "three")
	if d.State != api.StateQueued || len(d.Operations) != 3 || d.Operations[2].Step != 3 {
		t.Fatalf("CreateDeployment = %+v", d)
	}
	for i, want := range d.Operations {
		l := b.mustClaim(t, "w")
		if l.Operation.ID != want.ID || l.Operation.Step != i+1 || l.Operation.DeploymentID != d.ID {
			t.Fatalf("step %d: leased %s (step %d), want %s", i+1, l.Operation.ID, l.Operation.Step, want.ID)
		}
		if extra := b.claim(t, "w2", []string{"p"}); extra != nil {
			t.Fatalf("step %d: the next step %s was claimable before this one ended", i+1, extra.Operation.ID)
		}
		if st, _ := b.dep(t, d.ID); st != api.StateRunning {
			t.Errorf("step %d: deployment %s, want running", i+1, st)
		}
		_, ch := b.finish(t, l, "w", api.StateSucceeded, 0)
		if i < 2 && (len(ch.Ready) != 1 || ch.Ready[0].ID != d.Operations[i+1].ID || ch.Ready[0].Pool != "p") {
			t.Errorf("step %d: Changes.Ready = %+v, want the next step", i+1, ch.Ready)
		}
	}
	if st, _ := b.dep(t, d.ID); st != api.StateSucceeded {
		t.Errorf("deployment %s, want succeeded", st)
	}
}

func testDeploymentStopsOnFailure(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two", "three")
	b.finish(t, b.mustClaim(t, "w"), "w", api.StateSucceeded, 0)
	_, ch := b.finish(t, b.mustClaim(t, "w"), "w", api.StateFailed, 2)
	if len(ch.Ready) != 0 || !cmp.Equal(ch.Ended, []string{d.Operations[1].ID, d.Operations[2].ID}) {
		t.Errorf("Changes = %+v, want steps 2 and 3 ended", ch)
	}
	st, steps := b.dep(t, d.ID)
	if st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateSucceeded, api.StateFailed, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [succeeded failed cancelled]", st, steps)
	}
	if msg := b.get(t, d.Operations[2].ID).Message; msg != "not run: step 2 (two) ended failed" {
		t.Errorf("step 3 message = %q", msg)
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Errorf("a cancelled step was leased: %s", l.Operation.ID)
	}
}

func testDeploymentCancel(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two")
	l := b.mustClaim(t, "w")
	got, ch, err := b.s.CancelDeployment(b.ctx, d.ID, b.now)
	if err != nil || !cmp.Equal(ch.Ended, []string{d.Operations[1].ID}) || got.State != api.StateRunning {
		t.Fatalf("CancelDeployment = %+v, %+v, %v", got, ch, err)
	}
	if !b.get(t, l.Operation.ID).CancelRequested {
		t.Error("the running step has no cancel request")
	}
	b.finish(t, l, "w", api.StateCancelled, 143)
	if st, steps := b.dep(t, d.ID); st != api.StateCancelled || !cmp.Equal(steps, []api.State{api.StateCancelled, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want cancelled", st, steps)
	}
	_, _, err = b.s.CancelDeployment(b.ctx, d.ID, b.now)
	wantErr(t, err, store.ErrFinished)
	_, _, err = b.s.CancelDeployment(b.ctx, "dep-none", b.now)
	wantErr(t, err, store.ErrNotFound)

	// Cancelling a step that is still queued cancels the rest too.
	d2 := b.deploy(t, "a", "b")
	if _, _, err := b.s.Cancel(b.ctx, d2.Operations[0].ID, b.now); err != nil {
		t.Fatal(err)
	}
	if st, steps := b.dep(t, d2.ID); st != api.StateCancelled || !cmp.Equal(steps, []api.State{api.StateCancelled, api.StateCancelled}) {
		t.Errorf("deployment after cancelling its queued first step: %s %v", st, steps)
	}
}

func testDeploymentLostStep(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two")
	b.mustClaim(t, "w")
	ch, err := b.s.ExpireLeases(b.ctx, b.now.Add(2*time.Minute))
	if err != nil || len(ch.Ended) != 2 {
		t.Fatalf("ExpireLeases = %+v, %v", ch, err)
	}
	if st, steps := b.dep(t, d.ID); st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateLost, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [lost cancelled]", st, steps)
	}
}
