package jobrunner

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// profileConfig is the agent's configuration from values/profiles.yaml and a few more settings.
func profileConfig(t *testing.T) Config {
	t.Helper()
	l, err := chartgen.LoadAndValidate([]string{"../values/profiles.yaml"}, []string{"worker.name=w",
		"scriptPods.nodeSelector.pool=deploy", "scriptPods.tolerations[0].key=dedicated", "scriptPods.tolerations[0].operator=Exists",
		"scriptPods.resources.maxRequests.memory=32Gi", "scriptPods.profiles.deployer.priorityClassName=high"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFrom(l.Values, Env{Namespace: "octo", Version: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func lease(profile string, o *api.PodOverrides) *api.Lease {
	return &api.Lease{LeaseID: "l1", Operation: api.Operation{ID: "op-1", OperationSpec: api.OperationSpec{Pool: "production",
		Script: "true", Profile: profile, Overrides: o}}}
}

// TestBuildJobAppliesProfile: a profile and the step's overrides reach the pod, combined with scriptPods' as
// documented, and the runner's part of the pod (command, restartPolicy, its volumes, security) stays as is.
func TestBuildJobAppliesProfile(t *testing.T) {
	t.Parallel()
	cfg := profileConfig(t)
	plain := cfg.BuildJob("w1", lease("", nil), cfg.Requests).Spec.Template
	zone := map[string]string{"topology.kubernetes.io/zone": "eu-west-1b"}
	spot := api.Toleration{Key: "spot", Operator: "Equal", Value: "true", Effect: "NoSchedule"}
	tests := []struct {
		profile string
		o       *api.PodOverrides
		want    func(p corev1.PodTemplateSpec) []any // got, want pairs
	}{
		{"gpu", &api.PodOverrides{NodeSelector: zone, Tolerations: []api.Toleration{spot}}, func(p corev1.PodTemplateSpec) []any {
			var keys []string
			for _, t := range p.Spec.Tolerations {
				keys = append(keys, t.Key)
			}
			return []any{p.Spec.NodeSelector, map[string]string{"pool": "deploy", "accelerator": "nvidia-t4", "topology.kubernetes.io/zone": "eu-west-1b"},
				keys, []string{"dedicated", "nvidia.com/gpu", "spot"},
				p.Spec.Containers[0].Resources.Limits.Memory().String(), "16Gi"}
		}},
		{"spot", nil, func(p corev1.PodTemplateSpec) []any {
			return []any{p.Labels["cost-center"] + p.Labels[LabelWorker], "batchw1"}
		}},
		{"big-disk", nil, func(p corev1.PodTemplateSpec) []any {
			c := p.Spec.Containers[0]
			return []any{p.Spec.Volumes[len(p.Spec.Volumes)-1].ConfigMap.Name, "corporate-ca", c.VolumeMounts[len(c.VolumeMounts)-1].MountPath, "/etc/ssl/corporate",
				c.Env[len(c.Env)-1].Name, "SSL_CERT_DIR", c.EnvFrom[0].ConfigMapRef.Name, "proxy-settings",
				c.Resources.Limits.StorageEphemeral().String(), "40Gi"}
		}},
		{"deployer", nil, func(p corev1.PodTemplateSpec) []any {
			return []any{p.Spec.ServiceAccountName, "app-deployer", *p.Spec.AutomountServiceAccountToken, true, p.Annotations["example.com/audit"], "deploy",
				p.Spec.PriorityClassName, "high"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			l := lease(tt.profile, tt.o)
			requests, _, err := cfg.RequestsFor(&l.Operation)
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.BuildJob("w1", l, requests).Spec.Template
			pairs := tt.want(p)
			for i := 0; i < len(pairs); i += 2 {
				if diff := cmp.Diff(pairs[i+1], pairs[i]); diff != "" {
					t.Errorf("value %d (-want +got):\n%s", i/2, diff)
				}
			}
			s, b := p.Spec, plain.Spec
			if s.RestartPolicy != b.RestartPolicy || !cmp.Equal(s.SecurityContext, b.SecurityContext) || !cmp.Equal(s.InitContainers, b.InitContainers) ||
				!cmp.Equal(s.Containers[0].Command, b.Containers[0].Command) || !cmp.Equal(s.Containers[0].SecurityContext, b.Containers[0].SecurityContext) ||
				!cmp.Equal(s.Volumes[:len(b.Volumes)], b.Volumes) {
				t.Error("the profile changed the runner's part of the pod")
			}
		})
	}
	if again := cfg.BuildJob("w1", lease("", nil), cfg.Requests).Spec.Template; !cmp.Equal(again, plain) {
		t.Error("building profiled Jobs changed the default pod (a shared map or slice written)")
	}
}

// TestRequestsForProfile: a profile's requests replace the defaults, a step's are capped by maxRequests and
// the profile's limits, and a profile or override this worker does not offer is refused.
func TestRequestsForProfile(t *testing.T) {
	t.Parallel()
	cfg := profileConfig(t)
	q := resource.MustParse
	tests := []struct {
		name, profile string
		o             *api.PodOverrides
		req           *api.Resources
		want          corev1.ResourceList
		wantErr       string
	}{
		{"profile requests", "gpu", nil, nil, corev1.ResourceList{"cpu": q("2"), "memory": q("8Gi")}, ""},
		{"ephemeral storage", "big-disk", nil, nil, corev1.ResourceList{"cpu": q("250m"), "memory": q("256Mi"), "ephemeral-storage": q("20Gi")}, ""},
		{"capped by maxRequests and the limit", "gpu", nil, &api.Resources{CPU: "3", Memory: "20Gi"}, corev1.ResourceList{"cpu": q("2"), "memory": q("16Gi")}, ""},
		{"a step asks for less", "gpu", nil, &api.Resources{CPU: "1"}, corev1.ResourceList{"cpu": q("1"), "memory": q("8Gi")}, ""},
		{"unknown profile", "tpu", nil, nil, nil, `offers no profile "tpu" (it offers: big-disk, deployer, gpu, spot)`},
		{"override not allowed", "", &api.PodOverrides{NodeSelector: map[string]string{"disk": "ssd"}}, nil, nil, "overrides.node_selector.disk"},
	}
	for _, tt := range tests {
		op := lease(tt.profile, tt.o).Operation
		op.Requests = tt.req
		got, _, err := cfg.RequestsFor(&op)
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: err = %v, want one saying %s", tt.name, err, tt.wantErr)
		}
		if tt.wantErr == "" && (err != nil || !cmp.Equal(tt.want, got, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 }))) {
			t.Errorf("%s: RequestsFor = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
}
