package jobrunner

import (
	"io"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// A worker pod counts as running (so the keeper leaves the heartbeats to it) when it is Ready, or when all its
// containers run and started within workerStartGrace; not while it is deleted, pending, or waiting in a
// crash-loop back-off.
func TestWorkerRunning(t *testing.T) {
	t.Parallel()
	now := time.Now()
	running := func(started time.Time) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "worker", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}}
	}
	waiting := corev1.ContainerStatus{Name: "worker", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	deleted := metav1.NewTime(now)
	cases := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"no pod", nil, false},
		{"ready", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready, ContainerStatuses: []corev1.ContainerStatus{running(now.Add(-time.Hour))}}}, true},
		{"just started, not ready yet", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running(now.Add(-5 * time.Second))}}}, true},
		{"started long ago, not ready", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running(now.Add(-time.Minute))}}}, false},
		{"crash-loop back-off", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{waiting}}}, false},
		{"pulling its image", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, false},
		{"ready but being deleted", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
			if c.pod != nil {
				c.pod.Name, c.pod.Namespace = "ow-worker", "ns"
				if err := idx.Add(c.pod); err != nil {
					t.Fatal(err)
				}
			}
			if got := workerRunning(corelisters.NewPodLister(idx), "ns", now); got != c.want {
				t.Fatalf("workerRunning = %v, want %v", got, c.want)
			}
		})
	}
}

// One renewal, against a real dispatch server: a heartbeat for the worker that lists all its leases (so the
// server extends them), keeps its capabilities (operations that require them stay claimable) and says that it
// upgrades.
func TestKeeperRenewsEveryLease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	caps := []string{"custom-image", "kubernetes-job"}
	w, _ := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "0.1.0", Capacity: 5, Capabilities: caps})
	var before []api.Lease
	for range 2 {
		if _, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Syntax: "sh", Script: "true"}); err != nil {
			t.Fatal(err)
		}
		l, err := w.Lease(ctx, 0)
		if err != nil || l == nil {
			t.Fatalf("Lease = %v, %v", l, err)
		}
		before = append(before, *l)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	k := &LeaseKeeper{Dispatcher: w, Namespace: "ns", WorkerPods: "app=ow", Job: "ow-update-x", FromVersion: "0.1.0", ToVersion: "0.2.0", Capabilities: caps, Log: log}
	n, ttl, err := k.renew(ctx)
	if err != nil || n != 2 || ttl <= 0 {
		t.Fatalf("renew = %d leases, ttl %s, %v; want both leases renewed and the server's TTL", n, ttl, err)
	}
	after, err := w.Leases(ctx)
	if err != nil || len(after) != 2 {
		t.Fatalf("leases after renewing: %v %v", after, err)
	}
	for _, l := range after {
		i := slices.IndexFunc(before, func(b api.Lease) bool { return b.LeaseID == l.LeaseID })
		if i < 0 || !l.ExpiresAt.After(before[i].ExpiresAt) {
			t.Errorf("lease %s expires at %s, before the renewal at %v; want it extended", l.LeaseID, l.ExpiresAt, before)
		}
	}
	ws, err := admin.Workers(ctx)
	if err != nil || len(ws) != 1 {
		t.Fatalf("workers: %v %v", ws, err)
	}
	wk := ws[0]
	if wk.Version != "0.1.0" || !wk.Draining || wk.Running != 2 || !slices.Equal(wk.Capabilities, caps) ||
		wk.HealthMessage != "upgrading from 0.1.0 to 0.2.0 (self-update Job ow-update-x): no worker pod runs; the Job keeps the leases of 2 operations alive, whose Jobs keep running" {
		t.Errorf("the server sees %+v", wk)
	}
}
