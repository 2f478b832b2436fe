package chartgen

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The warm pool renders nothing by default; enabled, a Deployment of placeholders; the PriorityClass (and the
// worker's read access to it, for self-update) only when asked.
func TestWarmPoolObjects(t *testing.T) {
	t.Parallel()
	on := "scriptPods.warmPool.enabled=true"
	create := "scriptPods.warmPool.createPriorityClass=true"
	cases := []struct {
		name string
		sets []string
		want []string
	}{
		{"off by default", nil, nil},
		{"existing class", []string{on, "scriptPods.warmPool.priorityClassName=low"}, []string{"Deployment /ow-octo-worker-warm-pool"}},
		{"chart's class", []string{on, create}, []string{
			"ClusterRole /deploy-ow-octo-worker-warm-pool-read", "ClusterRoleBinding /deploy-ow-octo-worker-warm-pool-read",
			"Deployment /ow-octo-worker-warm-pool", "PriorityClass /deploy-ow-octo-worker-warm-pool"}},
		{"chart's class without self-update", []string{on, create, "selfUpdate.enabled=false"}, []string{
			"Deployment /ow-octo-worker-warm-pool", "PriorityClass /deploy-ow-octo-worker-warm-pool"}},
		{"class asked for but pool off", []string{create}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, n := range render(t, []string{"../values/defaults.yaml"}, tc.sets...).names() {
				if strings.Contains(n, "warm-pool") {
					got = append(got, n)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("warm pool objects (-want +got):\n%s", diff)
			}
		})
	}
}

// The placeholders hold the room of one script pod each, where script pods are scheduled, at the low
// priority, within Pod Security "restricted", and never hold up helm --wait.
func TestWarmPoolPlaceholders(t *testing.T) {
	t.Parallel()
	base := []string{"scriptPods.warmPool.enabled=true", "scriptPods.warmPool.createPriorityClass=true", "scriptPods.warmPool.replicas=3",
		"scriptPods.nodeSelector.pool=deploy", "scriptPods.tolerations[0].key=dedicated", "scriptPods.tolerations[0].operator=Exists",
		"scriptPods.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
		"scriptPods.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists"}
	cases := []struct {
		name        string
		sets        []string
		cpu, memory string
	}{
		{"script pods' requests", nil, "250m", "256Mi"},
		{"script pods' requests changed", []string{"scriptPods.resources.requests.memory=1Gi"}, "250m", "1Gi"},
		{"own cpu", []string{"scriptPods.warmPool.resources.cpu=1"}, "1", "256Mi"},
		{"own both", []string{"scriptPods.warmPool.resources.cpu=2", "scriptPods.warmPool.resources.memory=3Gi"}, "2", "3Gi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, []string{"../values/defaults.yaml"}, append(slices.Clone(base), tc.sets...)...)
			v, err := LoadAndValidate([]string{"../values/defaults.yaml"}, append(slices.Clone(base), tc.sets...))
			if err != nil {
				t.Fatal(err)
			}
			pc := find[*schedulingv1.PriorityClass](t, r, "deploy-ow-octo-worker-warm-pool")
			if pc.Value >= 0 || pc.GlobalDefault || pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptNever {
				t.Errorf("PriorityClass: value %d globalDefault %v preemption %v, want negative, false, Never", pc.Value, pc.GlobalDefault, pc.PreemptionPolicy)
			}
			dep := find[*appsv1.Deployment](t, r, "ow-octo-worker-warm-pool")
			if *dep.Spec.Replicas != 3 {
				t.Errorf("replicas %d, want 3", *dep.Spec.Replicas)
			}
			if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable.String() != "100%" {
				t.Errorf("strategy %+v: want maxUnavailable 100%%, so that helm --wait never waits for placeholders", dep.Spec.Strategy)
			}
			pod := dep.Spec.Template.Spec
			if pod.PriorityClassName != pc.Name {
				t.Errorf("priorityClassName %q, want %q", pod.PriorityClassName, pc.Name)
			}
			sp := v.Values.ScriptPods
			if diff := cmp.Diff(sp.NodeSelector, pod.NodeSelector); diff != "" {
				t.Errorf("nodeSelector (-script pods +placeholders):\n%s", diff)
			}
			if diff := cmp.Diff(sp.Tolerations, pod.Tolerations); diff != "" {
				t.Errorf("tolerations (-script pods +placeholders):\n%s", diff)
			}
			if diff := cmp.Diff(sp.Affinity, pod.Affinity); diff != "" {
				t.Errorf("affinity (-script pods +placeholders):\n%s", diff)
			}
			c := pod.Containers[0]
			if diff := cmp.Diff([]string{"/usr/local/bin/octo-worker", "pause"}, c.Command); diff != "" {
				t.Errorf("command (-want +got):\n%s", diff)
			}
			want := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(tc.cpu), corev1.ResourceMemory: resource.MustParse(tc.memory)}
			if !cmp.Equal(want, c.Resources.Requests, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })) || len(c.Resources.Limits) > 0 {
				t.Errorf("resources %v, want requests %v", c.Resources, want)
			}
			psc, sc := pod.SecurityContext, c.SecurityContext
			if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("placeholder pod is not within Pod Security restricted: %+v %+v", psc, sc)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Errorf("placeholders mount a service account token")
			}
		})
	}
}
