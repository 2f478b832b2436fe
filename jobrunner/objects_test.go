package jobrunner

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner"
)

// testConfig is the agent's configuration from the chart's defaults, as ConfigFrom makes it, with the
// images the tests name.
func testConfig() Config {
	v := chartgen.Defaults()
	v.Worker.Name, v.Worker.Pools = "w", []string{"default"}
	c, err := ConfigFrom(v, Env{Namespace: "octo", Version: "e2e"})
	if err != nil {
		panic(err)
	}
	c.WorkerImage = "octo-worker:e2e"
	c.ToolsImage = "tools:1"
	return c
}

func TestJobNameIsADNSLabel(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, id := range []string{"op-1", "OP-1", "op_1", strings.Repeat("x", 200), "01J9ZK3T8V/step:2", "--"} {
		n := JobName(id)
		if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
			t.Errorf("JobName(%q) = %q: %v", id, n, msgs)
		}
		if msgs := validation.IsValidLabelValue(LabelValue(id)); len(msgs) > 0 {
			t.Errorf("LabelValue(%q) = %q: %v", id, LabelValue(id), msgs)
		}
		if other, ok := seen[n]; ok {
			t.Errorf("JobName(%q) = JobName(%q) = %q", id, other, n)
		}
		seen[n] = id
	}
}

func TestRequestsFor(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	noMax := testConfig()
	noMax.MaxRequests = nil
	q := resource.MustParse
	tests := []struct {
		name    string
		cfg     Config
		req     *api.Resources
		cpu     string
		mem     string
		notes   int
		wantErr string
	}{
		{name: "defaults", cfg: cfg, cpu: "250m", mem: "256Mi"},
		{name: "own within max", cfg: cfg, req: &api.Resources{CPU: "1", Memory: "1Gi"}, cpu: "1", mem: "1Gi"},
		{name: "lower than default", cfg: cfg, req: &api.Resources{CPU: "100m"}, cpu: "100m", mem: "256Mi"},
		{name: "capped", cfg: cfg, req: &api.Resources{CPU: "8", Memory: "64Gi"}, cpu: "2", mem: "4Gi", notes: 2},
		{name: "no max caps at requests", cfg: noMax, req: &api.Resources{CPU: "1"}, cpu: "250m", mem: "256Mi", notes: 1},
		{name: "bad quantity", cfg: cfg, req: &api.Resources{Memory: "lots"}, wantErr: "requests.memory"},
		{name: "negative", cfg: cfg, req: &api.Resources{CPU: "-1"}, wantErr: "requests.cpu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, notes, err := tc.cfg.RequestsFor(&api.Operation{OperationSpec: api.OperationSpec{Requests: tc.req}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := corev1.ResourceList{corev1.ResourceCPU: q(tc.cpu), corev1.ResourceMemory: q(tc.mem)}
			if !got.Cpu().Equal(want[corev1.ResourceCPU]) || !got.Memory().Equal(want[corev1.ResourceMemory]) {
				t.Errorf("requests = %v, want %v", got, want)
			}
			if len(notes) != tc.notes {
				t.Errorf("notes = %q, want %d", notes, tc.notes)
			}
		})
	}
}

func TestBuildSecretAndJob(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Labels = map[string]string{"team": "a", LabelWorker: "spoofed"}
	cfg.ServiceAccount = "scripts"
	cfg.ImagePullSecret = []string{"regcred"}
	lease := &api.Lease{LeaseID: "l-1", Operation: api.Operation{ID: "op-1", OperationSpec: api.OperationSpec{
		Pool: "default", Script: "echo hi", TimeoutSeconds: 60, Image: "step:2",
		Variables: []api.Variable{{Name: "PW", Value: "s3cret", Sensitive: true}},
	}}}
	sec, err := cfg.BuildSecret("worker-1", lease, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	var spec podrunner.Spec
	if err := json.Unmarshal(sec.Data[podrunner.SpecKey], &spec); err != nil {
		t.Fatal(err)
	}
	if spec.OperationID != "op-1" || spec.Script != "echo hi" || len(spec.Variables) != 1 {
		t.Errorf("runner spec = %+v", spec)
	}
	job := cfg.BuildJob("worker-1", lease, cfg.Requests)
	wantLabels := map[string]string{"team": "a", LabelManagedBy: ManagedByValue, LabelWorker: "worker-1", LabelOperation: "op-1", LabelPool: "default"}
	if diff := cmp.Diff(wantLabels, job.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantLabels, job.Spec.Template.Labels); diff != "" {
		t.Errorf("pod labels (-want +got):\n%s", diff)
	}
	ps := job.Spec.Template.Spec
	c := ps.Containers[0]
	switch {
	case *job.Spec.BackoffLimit != 0, *job.Spec.ActiveDeadlineSeconds != 60, *job.Spec.TTLSecondsAfterFinished != 600:
		t.Errorf("job spec = backoff %d deadline %d ttl %d", *job.Spec.BackoffLimit, *job.Spec.ActiveDeadlineSeconds, *job.Spec.TTLSecondsAfterFinished)
	case ps.RestartPolicy != corev1.RestartPolicyNever, ps.ServiceAccountName != "scripts", ps.ImagePullSecrets[0].Name != "regcred":
		t.Errorf("pod spec = %+v", ps)
	case c.Image != "step:2", ps.InitContainers[0].Image != "octo-worker:e2e":
		t.Errorf("images: script %s, init %s", c.Image, ps.InitContainers[0].Image)
	case !*ps.SecurityContext.RunAsNonRoot, *c.SecurityContext.AllowPrivilegeEscalation, c.SecurityContext.Capabilities.Drop[0] != "ALL":
		t.Errorf("security context is not restricted")
	case ps.Volumes[2].Secret.SecretName != sec.Name:
		t.Errorf("secret volume %s, secret %s", ps.Volumes[2].Secret.SecretName, sec.Name)
	}
	if strings.Contains(job.String(), "s3cret") {
		t.Error("the Job spec holds a sensitive value")
	}
}

func TestBuildSecretRefuses(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	for name, spec := range map[string]api.OperationSpec{
		"too large":      {Script: strings.Repeat("x", MaxSecretBytes)},
		"bad syntax":     {Script: "x", Syntax: "cobol"},
		"escaping files": {Script: "x", Files: []api.File{{Path: "../../etc/passwd"}}},
	} {
		if _, err := cfg.BuildSecret("w", &api.Lease{Operation: api.Operation{ID: "op", OperationSpec: spec}}, make([]byte, 32)); err == nil {
			t.Errorf("%s: BuildSecret succeeded", name)
		}
	}
}

// Validate holds a Config built by hand to what the agent cannot run without; the chart's rules are
// chartgen's (ConfigFrom takes validated values).
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	bad := testConfig()
	bad.Pools = nil
	bad.Concurrency = 0
	bad.ToolsImage = ""
	err := bad.Validate()
	if err == nil {
		t.Fatal("invalid config passed")
	}
	for _, field := range []string{"Pools", "Concurrency", "ToolsImage"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
}

// ConfigFrom names the environment at fault: the values were validated by chartgen.
func TestConfigFromRefusesABadNamespace(t *testing.T) {
	t.Parallel()
	v := chartgen.Defaults()
	v.Worker.Pools = []string{"a"}
	_, err := ConfigFrom(v, Env{Namespace: "Not_A_Namespace", Release: "r"})
	if err == nil || !strings.Contains(err.Error(), "OCTO_NAMESPACE") {
		t.Fatalf("a bad namespace: %v, want an error naming OCTO_NAMESPACE", err)
	}
}

func TestRefusesMissingCapabilities(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Capabilities = []string{"kubernetes-job", "custom-image"}
	if msg := refusal(cfg.Capabilities, &api.Operation{OperationSpec: api.OperationSpec{Capabilities: []string{"custom-image"}}}); msg != "" {
		t.Errorf("refused an operation it can run: %s", msg)
	}
	msg := refusal(cfg.Capabilities, &api.Operation{OperationSpec: api.OperationSpec{Capabilities: []string{"docker", "gpu"}}})
	for _, want := range []string{"docker, gpu", "without a Docker daemon"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
}

// The Secret's owner is its Job, without a controller flag (no controller manages the Secret), and the
// Secret's deletion is blocked until the Job's foreground deletion has removed it.
func TestOwnerPatch(t *testing.T) {
	t.Parallel()
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "octo-op-1", UID: "0b3c"}}
	got, err := ownerPatch(job)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"octo-op-1","uid":"0b3c","blockOwnerDeletion":true}]}}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("owner patch (-want +got):\n%s", diff)
	}
}
