package chart

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/proc"
)

// A worker installed by the chart checks what it needs and reports each failure by name, and recovers when
// the cause goes: its Role losing `create` on Jobs makes it unhealthy naming the permission (and its /readyz
// fails), restoring the Role makes it healthy; a ResourceQuota that forbids the script pod makes it unhealthy
// naming the quota, deleting the quota healthy; a worker that stops is reported without a heartbeat.
func TestWorkerHealthChecks(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	port := proc.FreePort(t)
	installWorker(t, ns, d, "worker.healthCheckInterval=2s", fmt.Sprintf("worker.healthPort=%d", port))
	ctx := context.Background()
	readyz := func() (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	waitReadyz := func(what string, want int, contains string) {
		t.Helper()
		waitFor(t, time.Minute, "/readyz "+what, func() (bool, string) {
			code, body := readyz()
			return code == want && strings.Contains(body, contains), fmt.Sprintf("%d %s", code, body)
		})
	}
	healthy := func(what string) {
		t.Helper()
		d.waitWorker(t, 2*time.Minute, "healthy "+what, func(w api.Worker) bool {
			return w.State == api.WorkerHealthy && w.Healthy && w.HealthMessage == "" && len(w.Checks) == 4 &&
				!w.LastCheck.IsZero() && !slices.ContainsFunc(w.Checks, func(c api.Check) bool { return !c.OK })
		})
		waitReadyz("ready "+what, http.StatusOK, "ready")
	}
	unhealthy := func(what, contains string) {
		t.Helper()
		w := d.waitWorker(t, 2*time.Minute, "unhealthy: "+what, func(w api.Worker) bool {
			return w.State == api.WorkerUnhealthy && !w.Healthy && strings.Contains(w.HealthMessage, contains) &&
				slices.ContainsFunc(w.Checks, func(c api.Check) bool { return !c.OK && strings.Contains(c.Name+": "+c.Message, contains) })
		})
		t.Logf("%s: the server shows %q", what, w.HealthMessage)
		if out := octo(t, d.env, "workers", "list"); !strings.Contains(out, "unhealthy") {
			t.Errorf("workers list does not show the worker unhealthy:\n%s", out)
		}
		waitReadyz("failing: "+what, http.StatusServiceUnavailable, contains)
	}

	healthy("after a fresh install")

	// The Role loses create on Jobs.
	roles := kube.Client.RbacV1().Roles(ns)
	role, err := roles.Get(ctx, releaseName+"-octo-worker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := role.DeepCopy()
	revoked := false
	for i, r := range role.Rules {
		if slices.Contains(r.APIGroups, "batch") && slices.Contains(r.Resources, "jobs") {
			role.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(r.Verbs), func(v string) bool { return v == "create" || v == "*" })
			revoked = true
		}
	}
	if !revoked {
		t.Fatalf("the worker's Role has no rule for jobs.batch: %+v", role.Rules)
	}
	if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	unhealthy("the Role lacks create on Jobs", "permissions: may not create jobs.batch in namespace "+ns)

	// The Role is restored.
	role, err = roles.Get(ctx, original.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role.Rules = original.Rules
	if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	healthy("after the Role is restored")

	// A quota that allows no more pods.
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-more-pods"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}},
	}
	if _, err := kube.Client.CoreV1().ResourceQuotas(ns).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	unhealthy("a quota forbids the script pod", "no-more-pods")
	if w, _ := d.worker(t); w != nil && !strings.Contains(w.HealthMessage, "script-pod-admission: ") {
		t.Errorf("health message %q: want the failing check named script-pod-admission", w.HealthMessage)
	}
	if err := kube.Client.CoreV1().ResourceQuotas(ns).Delete(ctx, quota.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	healthy("after the quota is deleted")

	// An admin asks for a health check now: a script pod in the worker-tools image, its output shown.
	w, desc := d.worker(t)
	if w == nil {
		t.Fatal(desc)
	}
	id := w.ID
	out := octo(t, d.env, "workers", "check", id)
	if !strings.Contains(out, "octo-worker health check") {
		t.Errorf("workers check %s does not print the check pod's output:\n%s", id, out)
	}
	t.Logf("workers check:\n%s", out)
	if out := octo(t, d.env, "workers", "show", id); !strings.Contains(out, "script-pod-admission") {
		t.Errorf("workers show %s does not list the checks:\n%s", id, out)
	}

	// The worker stops: no heartbeat within three intervals.
	scale, err := kube.Client.AppsV1().Deployments(ns).GetScale(ctx, releaseName+"-octo-worker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if _, err := kube.Client.AppsV1().Deployments(ns).UpdateScale(ctx, scale.Name, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.waitWorker(t, 2*time.Minute, "without a heartbeat once stopped", func(w api.Worker) bool {
		return w.State == api.WorkerUnavailable && !w.Healthy && strings.Contains(w.HealthMessage, "no heartbeat for")
	})
}
