package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestProfiles: a profile's settings reach the pod (in a namespace enforcing Pod Security restricted); an
// unknown profile and an override outside the allow-list are refused at submit, naming the field; a profile
// whose nodeSelector no node matches waits for capacity with the scheduler's message.
func TestProfiles(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: `
scriptPods:
  pendingTimeout: 10m
  profiles:
    tuned:
      labels: {team: e2e}
      env: [{name: GREETING, value: hello}]
      volumes: [{name: data, configMap: {name: profile-data}}]
      volumeMounts: [{name: data, mountPath: /etc/profile-data}]
      resources: {limits: {memory: 300Mi}}
    nowhere:
      nodeSelector: {octo-worker.io/e2e-node-group: none}
  allowOverrides:
    nodeSelector: {topology.kubernetes.io/zone: "eu-.*"}
`})
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "profile-data", Namespace: e.ns}, Data: map[string]string{"greeting": "from a ConfigMap"}}
	if _, err := kube.Client.CoreV1().ConfigMaps(e.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	id := e.submit(api.OperationSpec{Script: "echo $GREETING; cat /etc/profile-data/greeting", Profile: "tuned"})
	if op := e.wait(id); op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s\n%s", op.State, op.Message, e.dump(id))
	}
	if got := texts(e.logs(id), api.StreamStdout); strings.Join(got, "|") != "hello|from a ConfigMap" {
		t.Errorf("script printed %q, want the profile's env and volume", got)
	}
	pod := e.pod(id)
	if pod.Labels["team"] != "e2e" || pod.Spec.Containers[0].Resources.Limits.Memory().String() != "300Mi" {
		t.Errorf("pod labels %v, limits %v: want the profile's", pod.Labels, pod.Spec.Containers[0].Resources.Limits)
	}

	for field, spec := range map[string]api.OperationSpec{
		"profile":                      {Script: "true", Profile: "gpu"}, // the message lists [nowhere, tuned]
		"overrides.node_selector.disk": {Script: "true", Overrides: &api.PodOverrides{NodeSelector: map[string]string{"disk": "ssd"}}},
	} {
		if err := e.trySubmit(spec); err == nil || !strings.Contains(err.Error(), "(field "+field+")") {
			t.Errorf("submit %+v: %v; want a refusal naming %s", spec, err, field)
		}
	}

	waiting := e.submit(api.OperationSpec{Script: "true", Profile: "nowhere",
		Overrides: &api.PodOverrides{NodeSelector: map[string]string{"topology.kubernetes.io/zone": "eu-1"}}})
	e.waitLog(waiting, "waiting for capacity")
	if sys := systemText(e.logs(waiting)); !strings.Contains(sys, "node affinity/selector") {
		t.Errorf("the wait does not carry the scheduler's message:\n%s", sys)
	}
	if sel := e.pod(waiting).Spec.NodeSelector; sel["octo-worker.io/e2e-node-group"] != "none" || sel["topology.kubernetes.io/zone"] != "eu-1" {
		t.Errorf("pod nodeSelector %v: want the profile's and the step's", sel)
	}
	e.cancel(waiting)
}

// TestProfileRefusedByAdmission: the worker's admission check dry-runs every profile's pod, so a profile the
// API server refuses (here: a PriorityClass that does not exist) makes the worker report it, named.
func TestProfileRefusedByAdmission(t *testing.T) {
	t.Parallel()
	e := setupWith(t, agentOptions{values: `
scriptPods:
  profiles:
    urgent: {priorityClassName: octo-e2e-missing}
`}, false)
	var msg string
	waitUntil(t, 2*time.Minute, "the worker to report the refused profile", func() bool {
		ws, err := e.admin.Workers(context.Background())
		for _, w := range ws {
			for _, c := range w.Checks {
				if c.Name == api.CheckScriptPodAdmission && !c.OK {
					msg = c.Message
				}
			}
		}
		return err == nil && msg != ""
	})
	if !strings.Contains(msg, "profile urgent") || !strings.Contains(msg, "octo-e2e-missing") {
		t.Errorf("admission check says %q; want the profile and the PriorityClass named", msg)
	}
}
