package jobrunner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// unreachableKube is a client of an API server that refuses every connection.
func unreachableKube(t *testing.T) kubernetes.Interface {
	t.Helper()
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

// An agent that starts while the Kubernetes API server refuses connections stays up: against a real dispatch
// server it heartbeats the lease it holds (the server extends it) and reports itself unhealthy with the reason,
// until it is stopped.
func TestAgentKeepsItsLeasesWhileTheAPIServerIsUnreachable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "e2e", Capacity: 2})
	if _, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Syntax: "sh", Script: "sleep 600"}); err != nil {
		t.Fatal(err)
	}
	lease, err := w.Lease(ctx, 0)
	if err != nil || lease == nil {
		t.Fatalf("Lease = %v, %v", lease, err)
	}
	cfg := testConfig()
	cfg.Pools, cfg.HeartbeatInterval = []string{"p"}, 50*time.Millisecond
	log, _ := logtest.NewNullLogger()
	a, err := New(cfg, Deps{Kube: unreachableKube(t), Dispatcher: w, WorkerID: reg.WorkerID, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()

	for {
		ls, err := w.Leases(ctx)
		if err != nil || len(ls) != 1 {
			t.Fatalf("leases: %v, %v; want the one leased", ls, err)
		}
		ws, err := admin.Workers(ctx)
		if err != nil || len(ws) != 1 {
			t.Fatalf("workers: %v, %v", ws, err)
		}
		if ls[0].ExpiresAt.After(lease.ExpiresAt) && !ws[0].Healthy && ws[0].Running == 1 {
			if !strings.HasPrefix(ws[0].HealthMessage, "waiting for the Kubernetes API server: ") || !strings.Contains(ws[0].HealthMessage, "connection refused") {
				t.Fatalf("health message %q; want the reason", ws[0].HealthMessage)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned %v while the API server was unreachable; want it to keep waiting", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if a.Ready() || a.Health().OK {
		t.Errorf("ready %v, health %+v while waiting; want not ready, unhealthy", a.Ready(), a.Health())
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after stop; want nil", err)
	}
}

// StartIdentity while the API server refuses connections: the mounted identity, when there is one; otherwise it
// keeps trying until its context ends.
func TestStartIdentityWhileTheAPIServerIsUnreachable(t *testing.T) {
	t.Parallel()
	mounted := t.TempDir()
	for k, v := range map[string]string{identityIDKey: "w-1", identityTokenKey: "tok\n"} {
		if err := os.WriteFile(filepath.Join(mounted, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log, hook := logtest.NewNullLogger()
	id, created, err := StartIdentity(t.Context(), unreachableKube(t), "ns", "ow-identity", mounted, nil, log)
	if err != nil || created || id != (Identity{WorkerID: "w-1", Token: "tok"}) {
		t.Fatalf("StartIdentity = %+v, %v, %v; want the mounted identity", id, created, err)
	}

	hook.Reset()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := StartIdentity(ctx, unreachableKube(t), "ns", "ow-identity", t.TempDir(), nil, log)
		done <- err
	}()
	// It retries, saying so each time, until stopped.
	for len(hook.AllEntries()) < 2 {
		select {
		case err := <-done:
			t.Fatalf("StartIdentity without a mounted identity returned %v; want it to keep retrying", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("StartIdentity stopped while retrying returned no error")
	}
}
