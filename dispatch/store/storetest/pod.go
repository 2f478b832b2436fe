package storetest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testPodLease: a pod token names its operation's lease while the operation is leased or running, for a claim,
// a replayed claim (whose token replaces the lost one) and a hand-off alike; it dies when the operation ends.
func testPodLease(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	key := bytes.Repeat([]byte{7}, 32)
	b.enqueue(t, api.OperationSpec{})
	p := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: "req-1", LeaseID: "lease-a", Now: b.now,
		ExpiresAt: b.now.Add(time.Minute), PodTokenHash: "hash-1", SealingKey: key}
	l, err := b.s.Claim(b.ctx, p)
	if err != nil || l == nil {
		t.Fatalf("Claim = %+v, %v", l, err)
	}
	if !bytes.Equal(l.SealingKey, key) {
		t.Errorf("lease's sealing key = %x, want %x", l.SealingKey, key)
	}
	want := store.PodLease{OperationID: l.Operation.ID, LeaseID: "lease-a", WorkerID: "w", ExpiresAt: p.ExpiresAt, SealingKey: key}
	checkPodLease(t, b, "hash-1", &want)
	checkPodLease(t, b, "hash-unknown", nil)
	leases, err := b.s.Leases(b.ctx, "w", b.now)
	if err != nil || len(leases) != 1 || leases[0].SealingKey != nil || leases[0].PodToken != "" {
		t.Errorf("Leases = %+v, %v: want the lease without its key or token", leases, err)
	}

	// A replay: the reply with hash-1's token was lost; hash-2's replaces it, the key stays.
	p.PodTokenHash, p.SealingKey, p.LeaseID = "hash-2", bytes.Repeat([]byte{9}, 32), "lease-b"
	again, err := b.s.Claim(b.ctx, p)
	if err != nil || again == nil || again.LeaseID != "lease-a" || !bytes.Equal(again.SealingKey, key) {
		t.Fatalf("replayed Claim = %+v, %v: want lease-a with the first key", again, err)
	}
	checkPodLease(t, b, "hash-1", nil)
	checkPodLease(t, b, "hash-2", &want)

	// Running keeps it; the end kills it.
	if _, err := b.s.SetRunning(b.ctx, ref(l, "w", b.now), ""); err != nil {
		t.Fatal(err)
	}
	checkPodLease(t, b, "hash-2", &want)
	b.finish(t, l, "w", api.StateSucceeded, 0)
	checkPodLease(t, b, "hash-2", nil)

	// A hand-off stores them too; expiry kills the token.
	h, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-handed", Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: b.now},
		store.ClaimParams{WorkerID: "w", LeaseID: "lease-h", Now: b.now, ExpiresAt: b.now.Add(time.Minute), PodTokenHash: "hash-3", SealingKey: key})
	if err != nil || h == nil || !bytes.Equal(h.SealingKey, key) {
		t.Fatalf("CreateLeasedOperation = %+v, %v", h, err)
	}
	checkPodLease(t, b, "hash-3", &store.PodLease{OperationID: "op-handed", LeaseID: "lease-h", WorkerID: "w", ExpiresAt: b.now.Add(time.Minute), SealingKey: key})
	if _, err := b.s.ExpireLeases(b.ctx, b.now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	checkPodLease(t, b, "hash-3", nil)
}

// checkPodLease checks what PodLease returns for hash: want, or ErrNotFound when want is nil.
func checkPodLease(t *testing.T, b *bundle, hash string, want *store.PodLease) {
	t.Helper()
	got, err := b.s.PodLease(b.ctx, hash)
	if want == nil {
		wantErr(t, err, store.ErrNotFound)
		return
	}
	if err != nil {
		t.Fatalf("PodLease(%s): %v", hash, err)
	}
	if got.OperationID != want.OperationID || got.LeaseID != want.LeaseID || got.WorkerID != want.WorkerID ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !bytes.Equal(got.SealingKey, want.SealingKey) {
		t.Errorf("PodLease(%s) = %+v, want %+v", hash, got, *want)
	}
}

// testPodEnd: the pod's end-of-stream marker is recorded once (the first stays), only through a live lease,
// and shown by PodEnd and PodLease, with the log's contiguous end.
func testPodEnd(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.enqueue(t, api.OperationSpec{})
	l, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "lease-a", Now: b.now,
		ExpiresAt: b.now.Add(time.Minute), PodTokenHash: "hash-e", SealingKey: bytes.Repeat([]byte{1}, 32)})
	if err != nil || l == nil {
		t.Fatalf("Claim = %+v, %v", l, err)
	}
	id := l.Operation.ID
	if end, err := b.s.PodEnd(b.ctx, id); err != nil || end != nil {
		t.Fatalf("PodEnd before any = %+v, %v", end, err)
	}
	if _, err := b.s.PodEnd(b.ctx, "op-none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PodEnd(unknown) error = %v, want ErrNotFound", err)
	}
	wantErr(t, b.s.SetPodEnd(b.ctx, store.LeaseRef{OperationID: id, LeaseID: "forged", WorkerID: "w", Now: b.now}, api.PodEnd{Seq: 1}), store.ErrNotLeased)
	if _, err := b.s.AppendLogs(b.ctx, ref(l, "w", b.now), []api.LogLine{{Seq: 1, Time: b.now, Stream: "stdout", Text: "a"}}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []api.PodEnd{{Seq: 1, ExitCode: 3}, {Seq: 2, ExitCode: 4}} {
		if err := b.s.SetPodEnd(b.ctx, ref(l, "w", b.now), e); err != nil {
			t.Fatalf("SetPodEnd(%+v): %v", e, err)
		}
	}
	want := &api.PodEnd{Seq: 1, ExitCode: 3}
	if end, err := b.s.PodEnd(b.ctx, id); err != nil || end == nil || *end != *want {
		t.Errorf("PodEnd = %+v, %v, want %+v", end, err, want)
	}
	pl, err := b.s.PodLease(b.ctx, "hash-e")
	if err != nil || pl.LastSeq != 1 || pl.End == nil || *pl.End != *want {
		t.Errorf("PodLease = %+v, %v: want last_seq 1 and the end %+v", pl, err, want)
	}
}
