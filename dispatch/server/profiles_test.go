package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// profileWorker registers a worker of pool p offering profiles with allow-list policy.
func (b *bundle) profileWorker(name string, profiles []string, policy *api.OverridePolicy) *client.Client {
	b.t.Helper()
	tok, err := b.admin.CreateToken(b.ctx, []string{"p"}, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	reg, err := b.client(tok.Token).Register(b.ctx, api.RegisterRequest{Name: name, Pools: []string{"p"}, Version: "1.0.0",
		Capacity: 4, Profiles: profiles, AllowOverrides: policy})
	if err != nil {
		b.t.Fatalf("Register: %v", err)
	}
	return b.client(reg.WorkerToken)
}

// wantRefused checks a 422 naming field and saying each of says.
func wantRefused(t *testing.T, err error, field string, says ...string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != 422 || se.Body.Field != field {
		t.Fatalf("got %v; want 422 naming field %s", err, field)
	}
	for _, s := range says {
		if !strings.Contains(se.Body.Error, s) {
			t.Errorf("message %q does not say %s", se.Body.Error, s)
		}
	}
}

// TestProfileRefusedAtSubmit: a profile no worker of the pool offers, and an override no such worker allows,
// are refused at submit, naming the field and what exists.
func TestProfileRefusedAtSubmit(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	b.pool("empty")
	b.profileWorker("gpu", []string{"gpu", "spot"}, &api.OverridePolicy{NodeSelector: map[string]string{"zone": "eu-.*"},
		Tolerations: []api.Toleration{{Key: "spot", Operator: "Exists", Effect: "NoSchedule"}}})
	b.profileWorker("plain", nil, nil)
	zone := func(v string) *api.PodOverrides { return &api.PodOverrides{NodeSelector: map[string]string{"zone": v}} }
	tests := []struct {
		spec  api.OperationSpec
		field string
		says  []string
	}{
		{api.OperationSpec{Profile: "big"}, "profile", []string{`"big"`, "[gpu, spot]"}},
		{api.OperationSpec{Pool: "empty", Profile: "gpu"}, "profile", []string{"[]"}},
		{api.OperationSpec{Profile: "gpu", Overrides: &api.PodOverrides{NodeSelector: map[string]string{"disk": "ssd"}}}, "overrides.node_selector.disk", []string{"[zone]"}},
		{api.OperationSpec{Profile: "gpu", Overrides: zone("us-1")}, "overrides.node_selector.zone", []string{`"eu-.*"`}},
		{api.OperationSpec{Profile: "gpu", Overrides: zone("x-eu-1")}, "overrides.node_selector.zone", nil}, // matched whole
		{api.OperationSpec{Overrides: &api.PodOverrides{Tolerations: []api.Toleration{{Key: "gpu", Operator: "Exists"}}}}, "overrides.tolerations[0]", []string{"spot:NoSchedule"}},
		{api.OperationSpec{Profile: "GPU"}, "profile", nil},
	}
	for _, tt := range tests {
		tt.spec.Pool, tt.spec.Script = cmpOr(tt.spec.Pool, "p"), "true"
		_, err := b.admin.Submit(b.ctx, tt.spec)
		wantRefused(t, err, tt.field, tt.says...)
	}
	_, err := b.admin.Deploy(b.ctx, api.DeploymentSpec{Name: "d", Pool: "p", Steps: []api.OperationSpec{{Script: "true", Profile: "gpu"}, {Script: "true", Profile: "big"}}})
	wantRefused(t, err, "steps[1].profile")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestProfileLeasedOnlyByOfferingWorker: only a worker offering the profile takes the operation, whether it
// claims or waits in a long-poll when it is submitted; once no worker offers it, a submit is refused.
func TestProfileLeasedOnlyByOfferingWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	gpu := b.profileWorker("gpu", []string{"gpu"}, nil)
	plain := b.profileWorker("plain", nil, nil)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan *api.Lease, 1)
	go func() {
		l, _ := plain.Lease(ctx, 30*time.Second)
		done <- l
	}()
	b.waitAsleep("plain to wait", func(n int) bool { return n == 1 })
	op := b.submit(api.OperationSpec{Pool: "p", Profile: "gpu"})
	if l := b.lease(gpu); l.Operation.ID != op.ID || l.Operation.Profile != "gpu" {
		t.Fatalf("gpu worker leased %+v, want %s with its profile", l.Operation, op.ID)
	}
	cancel()
	if l := <-done; l != nil {
		t.Errorf("a worker that does not offer the profile leased %s", l.Operation.ID)
	}
	if _, err := gpu.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Running: []string{op.ID}, Health: api.Health{OK: true}, Profiles: []string{}}); err != nil {
		t.Fatal(err)
	}
	_, err := b.admin.Submit(b.ctx, api.OperationSpec{Pool: "p", Script: "true", Profile: "gpu"})
	wantRefused(t, err, "profile")
}
