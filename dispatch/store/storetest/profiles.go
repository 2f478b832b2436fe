package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testProfilesStored: a worker's profiles and allow-list are kept as registered, replaced by a heartbeat
// that has them and kept by one without; an operation keeps its profile and overrides.
func testProfilesStored(t *testing.T, b *bundle) {
	w := store.Worker{Worker: api.Worker{ID: "w1", Name: "one", Pools: []string{"p"}, Version: "1.0", Capabilities: []string{},
		Capacity: 4, Healthy: true, RegisteredAt: b.now, LastHeartbeat: b.now, Profiles: []string{"gpu", "spot"},
		AllowOverrides: &api.OverridePolicy{NodeSelector: map[string]string{"zone": "eu-.*"}}}, TokenHash: []byte("wh1"), TokenID: "tok-1"}
	if err := b.s.CreateWorker(b.ctx, w); err != nil {
		t.Fatal(err)
	}
	if got, err := b.s.Worker(b.ctx, "w1"); err != nil || !cmp.Equal(w, got) {
		t.Errorf("Worker after CreateWorker: %v (-want +got):\n%s", err, cmp.Diff(w, got))
	}
	for _, tt := range []struct{ send, want []string }{{[]string{"big"}, []string{"big"}}, {nil, []string{"big"}}, {[]string{}, nil}} {
		hb := api.HeartbeatRequest{Version: "1.0", Capacity: 4, Health: api.Health{OK: true}, Profiles: tt.send}
		if _, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w1", HeartbeatRequest: hb, Now: b.now}); err != nil {
			t.Fatal(err)
		}
		if got, err := b.s.Worker(b.ctx, "w1"); err != nil || len(got.Profiles)+len(tt.want) > 0 && !cmp.Equal(got.Profiles, tt.want) || got.AllowOverrides == nil {
			t.Errorf("after a heartbeat with profiles %#v: %v, allow-list %+v (%v); want %v and the allow-list kept", tt.send, got.Profiles, got.AllowOverrides, err, tt.want)
		}
	}
	spec := api.OperationSpec{Profile: "gpu", Overrides: &api.PodOverrides{NodeSelector: map[string]string{"zone": "eu-1"},
		Tolerations: []api.Toleration{{Key: "spot", Operator: "Exists"}}}}
	if got := b.get(t, b.enqueue(t, spec).ID); got.Profile != "gpu" || !cmp.Equal(got.Overrides, spec.Overrides) {
		t.Errorf("stored operation: profile %q, overrides %+v", got.Profile, got.Overrides)
	}
}

// testClaimProfiles: an operation naming a profile goes only to a worker that offers it, whether it is claimed
// or ready after a deployment step (which announces its profile for the wake-up).
func testClaimProfiles(t *testing.T, b *bundle) {
	tests := []struct {
		profile string
		offers  []string
		match   bool
	}{{"", nil, true}, {"", []string{"gpu"}, true}, {"gpu", nil, false}, {"gpu", []string{"spot"}, false}, {"gpu", []string{"spot", "gpu"}, true}}
	for i, tt := range tests {
		pool := fmt.Sprintf("profiles-%d", i)
		b.pool(t, pool)
		op := b.enqueue(t, api.OperationSpec{Pool: pool, Profile: tt.profile})
		b.registerWorker(t, "w")
		l, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: "w", Pools: []string{pool}, Profiles: tt.offers,
			LeaseID: b.id("lease"), Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
		if err != nil || (l != nil) != tt.match || l != nil && l.Operation.ID != op.ID {
			t.Errorf("profile %q, worker offers %v: claimed %v (%v), want %v", tt.profile, tt.offers, l != nil, err, tt.match)
		}
		if got := (store.Offer{Pools: []string{pool}, Profiles: tt.offers}).Takes(pool, nil, tt.profile); got != tt.match {
			t.Errorf("Offer.Takes = %v disagrees with the claim", got)
		}
	}
	d := store.NewDeployment{ID: b.id("dep"), Name: "release", CreatedAt: b.now, Steps: []store.NewOperation{
		{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "true"}, CreatedAt: b.now},
		{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "true", Profile: "gpu"}, CreatedAt: b.now}}}
	if _, err := b.s.CreateDeployment(b.ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, ch := b.finish(t, b.mustClaim(t, "w"), "w", api.StateSucceeded, 0); !cmp.Equal(ch.Ready, []store.Ready{{ID: d.Steps[1].ID, Pool: "p", Profile: "gpu"}}) {
		t.Errorf("Ready after step 1 = %+v, want step 2 with its profile", ch.Ready)
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Errorf("a worker offering no profile claimed step 2 (profile gpu)")
	}
}
