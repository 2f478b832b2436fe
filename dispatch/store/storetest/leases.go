package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testLeaseChecks(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	tests := []struct {
		name string
		ref  store.LeaseRef
		want error
	}{
		{"other worker", store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "intruder", Now: b.now}, store.ErrNotLeased},
		{"wrong lease id", store.LeaseRef{OperationID: l.Operation.ID, LeaseID: "forged", WorkerID: "w", Now: b.now}, store.ErrNotLeased},
		{"unknown operation", store.LeaseRef{OperationID: "op-none", LeaseID: l.LeaseID, WorkerID: "w", Now: b.now}, store.ErrNotFound},
		{"expired", ref(l, "w", b.now.Add(2*time.Minute)), store.ErrLeaseLost},
	}
	for _, tt := range tests {
		_, err := b.s.AppendLogs(b.ctx, tt.ref, []api.LogLine{{Seq: 1, Time: b.now, Stream: "stdout", Text: "x"}})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: AppendLogs error = %v, want %v", tt.name, err, tt.want)
		}
		_, err = b.s.SetRunning(b.ctx, tt.ref, "")
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: SetRunning error = %v, want %v", tt.name, err, tt.want)
		}
		_, _, err = b.s.Finish(b.ctx, tt.ref, store.Result{State: api.StateFailed, ExitCode: intp(1)})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Finish error = %v, want %v", tt.name, err, tt.want)
		}
	}
	if op := b.get(t, l.Operation.ID); op.State != api.StateLeased {
		t.Errorf("refused calls changed the operation: %s", op.State)
	}
}

func testSetRunning(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	for range 2 {
		op, err := b.s.SetRunning(b.ctx, ref(l, "w", b.now), "job created")
		if err != nil || op.State != api.StateRunning || op.StartedAt == nil || op.Message != "job created" {
			t.Fatalf("SetRunning = %+v, %v", op, err)
		}
	}
}

func testFinish(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	r := ref(l, "w", b.now)
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{{Seq: 1, Time: b.now, Stream: "stdout", Text: "a"}}); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name string
		res  store.Result
		want error
	}{
		{"succeeded without an exit code", store.Result{State: api.StateSucceeded, LastSeq: 1}, store.ErrInvalid},
		{"succeeded with exit code 3", store.Result{State: api.StateSucceeded, ExitCode: intp(3), LastSeq: 1}, store.ErrInvalid},
		{"state lost", store.Result{State: api.StateLost, LastSeq: 1}, store.ErrInvalid},
		{"state running", store.Result{State: api.StateRunning, LastSeq: 1}, store.ErrInvalid},
	}
	for _, tt := range refusals {
		if _, _, err := b.s.Finish(b.ctx, r, tt.res); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
	_, _, err := b.s.Finish(b.ctx, r, store.Result{State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 3})
	var missing *store.MissingLinesError
	if !errors.As(err, &missing) || missing.Have != 1 || missing.Want != 3 {
		t.Fatalf("result beyond the stored log: error = %v, want MissingLinesError{1, 3}", err)
	}
	res := store.Result{State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 1, Message: "done"}
	op, ch, err := b.s.Finish(b.ctx, r, res)
	if err != nil || op.State != api.StateSucceeded || *op.ExitCode != 0 || op.FinishedAt == nil || op.Message != "done" {
		t.Fatalf("Finish = %+v, %v", op, err)
	}
	if !cmp.Equal(ch.Ended, []string{l.Operation.ID}) {
		t.Errorf("Changes.Ended = %v", ch.Ended)
	}
	// A retried result is accepted and changes nothing.
	if again, ch, err := b.s.Finish(b.ctx, r, res); err != nil || again.State != api.StateSucceeded || len(ch.Ended) != 0 {
		t.Errorf("replayed result = %+v, %+v, %v", again, ch, err)
	}
	// A different result after the end is refused, and so are logs.
	if _, _, err := b.s.Finish(b.ctx, r, store.Result{State: api.StateFailed, ExitCode: intp(1)}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("a second, different result: error = %v, want ErrLeaseLost", err)
	}
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{{Seq: 2, Time: b.now, Stream: "stdout", Text: "late"}}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("logs after the end: error = %v, want ErrLeaseLost", err)
	}
	if l := b.claim(t, "w2", []string{"p"}); l != nil {
		t.Errorf("a finished operation was leased again: %s", l.Operation.ID)
	}
}

func testCancel(t *testing.T, b *bundle) {
	queued := b.enqueue(t, api.OperationSpec{})
	op, ch, err := b.s.Cancel(b.ctx, queued.ID, b.now)
	if err != nil || op.State != api.StateCancelled || op.FinishedAt == nil || !cmp.Equal(ch.Ended, []string{queued.ID}) {
		t.Fatalf("Cancel(queued) = %+v, %+v, %v", op, ch, err)
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Fatalf("a cancelled operation was leased: %s", l.Operation.ID)
	}
	_, _, err = b.s.Cancel(b.ctx, queued.ID, b.now)
	wantErr(t, err, store.ErrFinished)
	_, _, err = b.s.Cancel(b.ctx, "op-none", b.now)
	wantErr(t, err, store.ErrNotFound)

	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	op, ch, err = b.s.Cancel(b.ctx, l.Operation.ID, b.now)
	if err != nil || op.State != api.StateLeased || !op.CancelRequested || len(ch.Ended) != 0 {
		t.Fatalf("Cancel(leased) = %+v, %+v, %v", op, ch, err)
	}
	b.registerWorker(t, "w")
	hb, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: b.now, LeaseExpiresAt: b.now.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{l.Operation.ID}}})
	if err != nil || !cmp.Equal(hb.Cancel, []string{l.Operation.ID}) {
		t.Fatalf("heartbeat after a cancel request = %+v, %v", hb, err)
	}
	// A restarted worker learns of the cancel from the leases it re-adopts: its Job may be gone already.
	if leases, err := b.s.Leases(b.ctx, "w", b.now); err != nil || len(leases) != 1 || !leases[0].Operation.CancelRequested {
		t.Fatalf("Leases after a cancel request = %+v, %v; want the lease, saying a cancel was requested", leases, err)
	}
	op, _, err = b.s.Finish(b.ctx, ref(l, "w", b.now), store.Result{State: api.StateCancelled, Message: "cancelled by request"})
	if err != nil || op.State != api.StateCancelled {
		t.Errorf("Finish(cancelled) = %+v, %v", op, err)
	}
}

func testExpireLeases(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	kept := b.mustClaim(t, "w")
	dropped := b.mustClaim(t, "w")
	at := b.now.Add(40 * time.Second)
	if _, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: at, LeaseExpiresAt: at.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{kept.Operation.ID}}}); err != nil {
		t.Fatal(err)
	}
	ch, err := b.s.ExpireLeases(b.ctx, b.now.Add(30*time.Second))
	if err != nil || len(ch.Ended) != 0 {
		t.Fatalf("nothing has expired yet, but ExpireLeases = %+v, %v", ch, err)
	}
	ch, err = b.s.ExpireLeases(b.ctx, b.now.Add(61*time.Second))
	if err != nil || !cmp.Equal(ch.Ended, []string{dropped.Operation.ID}) {
		t.Fatalf("ExpireLeases = %+v, %v; want only %s", ch, err, dropped.Operation.ID)
	}
	op := b.get(t, dropped.Operation.ID)
	if op.State != api.StateLost || op.FinishedAt == nil || op.Message == "" {
		t.Errorf("expired operation = %+v, want lost with a message", op)
	}
	if got := b.get(t, kept.Operation.ID); got.State != api.StateLeased {
		t.Errorf("renewed operation = %s, want leased", got.State)
	}
	// Lost is final: never leased again, and the old lease is refused.
	if l := b.claim(t, "w2", []string{"p"}); l != nil {
		t.Errorf("a lost operation was leased again: %s", l.Operation.ID)
	}
	_, _, err = b.s.Finish(b.ctx, ref(dropped, "w", b.now), store.Result{State: api.StateSucceeded, ExitCode: intp(0)})
	var lost *store.LeaseLostError
	if !errors.As(err, &lost) || !lost.Expired {
		t.Errorf("result on a lost operation: error = %v, want an expired LeaseLostError", err)
	}
}

func testLeases(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{Variables: []api.Variable{{Name: "S", Value: "v", Sensitive: true}}})
	b.enqueue(t, api.OperationSpec{})
	l1 := b.mustClaim(t, "w")
	l2 := b.mustClaim(t, "w")
	b.finish(t, l2, "w", api.StateFailed, 1)
	leases, err := b.s.Leases(b.ctx, "w", b.now)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Leases = %+v, %v; want only the live one", leases, err)
	}
	if diff := cmp.Diff(*l1, leases[0]); diff != "" {
		t.Errorf("Leases[0] differs from the lease granted (-want +got):\n%s", diff)
	}
	if none, _ := b.s.Leases(b.ctx, "w", b.now.Add(time.Hour)); len(none) != 0 {
		t.Errorf("an expired lease is listed: %+v", none)
	}
}

func testListOperations(t *testing.T, b *bundle) {
	b.pool(t, "q")
	a := b.enqueue(t, api.OperationSpec{Name: "a", Image: "alpine:3", Script: "big script"})
	bq := b.enqueue(t, api.OperationSpec{Name: "b", Pool: "q"})
	c := b.enqueue(t, api.OperationSpec{Name: "c"})
	b.mustClaim(t, "w")
	tests := []struct {
		f    store.OperationFilter
		want []string
	}{
		{store.OperationFilter{}, []string{c.ID, bq.ID, a.ID}},
		{store.OperationFilter{Limit: 2}, []string{c.ID, bq.ID}},
		{store.OperationFilter{Pool: "q"}, []string{bq.ID}},
		{store.OperationFilter{State: api.StateLeased}, []string{a.ID}},
		{store.OperationFilter{WorkerID: "w"}, []string{a.ID}},
		{store.OperationFilter{State: api.StateQueued, Pool: "p"}, []string{c.ID}},
	}
	for _, tt := range tests {
		ops, err := b.s.ListOperations(b.ctx, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, op := range ops {
			ids = append(ids, op.ID)
			if op.Script != "" || op.Files != nil || op.Variables != nil {
				t.Errorf("a list carries the body of %s", op.ID)
			}
		}
		if diff := cmp.Diff(tt.want, ids); diff != "" {
			t.Errorf("ListOperations(%+v) (-want +got):\n%s", tt.f, diff)
		}
	}
	if got := b.get(t, a.ID); got.Script != "big script" || got.Image != "alpine:3" || got.Name != "a" {
		t.Errorf("Operation = %+v", got)
	}
	sum, err := b.s.OperationSummary(b.ctx, a.ID)
	if err != nil || sum.Script != "" || sum.State != api.StateLeased || sum.Image != "alpine:3" {
		t.Errorf("OperationSummary = %+v, %v", sum, err)
	}
	_, err = b.s.OperationSummary(b.ctx, "op-none")
	wantErr(t, err, store.ErrNotFound)
}
