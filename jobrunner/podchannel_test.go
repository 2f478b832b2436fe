package jobrunner

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner"
)

// TestSecretCarriesThePodChannel: with a lease from a server that mints them, the operation's Secret holds
// the server's sealing key and the pod token, and the runner's spec the URL pods reach the server at; a lease
// without them (an older server) gives a fresh key and no channel.
func TestSecretCarriesThePodChannel(t *testing.T) {
	t.Parallel()
	serverKey := bytes.Repeat([]byte{5}, 32)
	tests := []struct {
		name      string
		lease     api.Lease
		wantToken string
		wantURL   string
		serverKey bool
	}{
		{name: "channel", lease: api.Lease{PodToken: "octo-pod-abc", SealingKey: serverKey}, wantToken: "octo-pod-abc", wantURL: "https://dispatch.internal:8443", serverKey: true},
		{name: "older server", lease: api.Lease{}},
	}
	cfg := testConfig()
	cfg.DispatchURL = "https://dispatch.internal:8443"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lease := tc.lease
			lease.LeaseID, lease.Operation = "l-1", api.Operation{ID: "op-1", OperationSpec: api.OperationSpec{Pool: "default", Script: "echo hi"}}
			key, err := sealingKey(&lease)
			if err != nil || len(key) != 32 || bytes.Equal(key, serverKey) != tc.serverKey {
				t.Fatalf("sealingKey = %x, %v; want the server's: %v", key, err, tc.serverKey)
			}
			sec, err := cfg.BuildSecret("worker-1", &lease, key)
			if err != nil {
				t.Fatal(err)
			}
			var spec podrunner.Spec
			if err := json.Unmarshal(sec.Data[podrunner.SpecKey], &spec); err != nil {
				t.Fatal(err)
			}
			if got := string(sec.Data[podrunner.PodTokenKey]); got != tc.wantToken || spec.DispatchURL != tc.wantURL {
				t.Errorf("Secret's pod token %q, spec's dispatch URL %q; want %q, %q", got, spec.DispatchURL, tc.wantToken, tc.wantURL)
			}
			if !bytes.Equal(sec.Data[podrunner.SealingKeyKey], key) {
				t.Errorf("Secret's sealing key = %x, want %x", sec.Data[podrunner.SealingKeyKey], key)
			}
		})
	}
}

// TestDispatchURLDefaultsToTheWorkers: script pods reach the server where the worker does unless
// scriptPods.dispatchURL says otherwise.
func TestDispatchURLDefaultsToTheWorkers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ own, want string }{{"", "https://deploy.example.com"}, {"http://dispatch.svc:8080", "http://dispatch.svc:8080"}} {
		v := chartgen.Defaults()
		v.Worker.Name, v.Worker.Pools, v.Worker.ServerURL = "w", []string{"default"}, "https://deploy.example.com"
		v.ScriptPods.DispatchURL = tc.own
		c, err := ConfigFrom(v, Env{Namespace: "octo", Version: "e2e"})
		if err != nil || c.DispatchURL != tc.want {
			t.Errorf("scriptPods.dispatchURL %q: DispatchURL = %q, %v; want %q", tc.own, c.DispatchURL, err, tc.want)
		}
	}
}
