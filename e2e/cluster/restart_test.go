package cluster_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The API server restarts (as in a control-plane upgrade) while a pod runs: the node reports the pod's end
// once it reaches the new API server, and a pod created afterwards is scheduled, run and its log served, so
// the scheduler, the controllers and the node all came back by themselves. Not parallel: every test shares
// the API server.
func TestRestartAPIServer(t *testing.T) {
	ns := kube.Namespace(t, nil)
	createPod(t, ns, shPod("across", "sleep 2; echo across"))
	waitPod(t, ns, "across", "running", running)
	if err := kube.RestartAPIServer(testContext(t)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"across", "after"} {
		var p *corev1.Pod
		if name == "after" {
			p = runPod(t, ns, shPod(name, "echo "+name))
		} else {
			p = waitPod(t, ns, name, "finished", terminal)
		}
		if p.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("pod %s after the restart: %s", name, describe(p))
		}
		if got := podLogs(t, ns, name, &corev1.PodLogOptions{}); strings.TrimSpace(got) != name {
			t.Errorf("log of %s: %q, want %q", name, got, name)
		}
	}
}
