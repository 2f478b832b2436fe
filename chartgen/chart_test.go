package chartgen

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const chartDir = "../charts/octo-worker"

func TestGeneratedFilesInSync(t *testing.T) {
	t.Parallel()
	stale, err := Drift(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Fatalf("generated chart files are out of date, run `make generate`: %v", stale)
	}
}

// rendered is a rendered chart decoded into typed objects.
type rendered struct {
	objs  []runtime.Object
	notes string
}

func render(t *testing.T, files []string, sets ...string) rendered {
	t.Helper()
	l, err := LoadAndValidate(files, sets)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	ch, err := EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Render(context.Background(), ch, RenderOptions{Release: "ow", Namespace: "deploy"}, l.User)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out rendered
	out.notes = r.Notes
	for _, doc := range strings.Split(r.Manifest, "\n---\n") {
		if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" || !strings.Contains(doc, "kind:") {
			continue
		}
		if strings.Contains(doc, "apiVersion: monitoring.coreos.com/v1") { // no Go type here: unstructured
			u := &unstructured.Unstructured{}
			if err := yaml.UnmarshalStrict([]byte(doc), &u.Object); err != nil {
				t.Fatalf("rendered monitor does not decode: %v\n%s", err, doc)
			}
			out.objs = append(out.objs, u)
			continue
		}
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("rendered object does not decode strictly: %v\n%s", err, doc)
		}
		out.objs = append(out.objs, obj)
	}
	return out
}

// names lists "Kind namespace/name" of every object, sorted.
func (r rendered) names() []string {
	var out []string
	for _, o := range r.objs {
		m := o.(interface {
			GetName() string
			GetNamespace() string
		})
		kind := strings.TrimPrefix(strings.TrimPrefix(typeString(o), "*v1."), "*")
		out = append(out, kind+" "+m.GetNamespace()+"/"+m.GetName())
	}
	sort.Strings(out)
	return out
}

func typeString(o runtime.Object) string {
	switch o.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *batchv1.Job:
		return "Job"
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *corev1.Secret:
		return "Secret"
	case *corev1.ServiceAccount:
		return "ServiceAccount"
	case *rbacv1.Role:
		return "Role"
	case *rbacv1.RoleBinding:
		return "RoleBinding"
	case *rbacv1.ClusterRole:
		return "ClusterRole"
	case *rbacv1.ClusterRoleBinding:
		return "ClusterRoleBinding"
	case *schedulingv1.PriorityClass:
		return "PriorityClass"
	case *corev1.Service:
		return "Service"
	case *unstructured.Unstructured:
		return o.(*unstructured.Unstructured).GetKind()
	}
	return "unknown"
}

func find[T runtime.Object](t *testing.T, r rendered, name string) T {
	t.Helper()
	for _, o := range r.objs {
		if x, ok := o.(T); ok && o.(interface{ GetName() string }).GetName() == name {
			return x
		}
	}
	var zero T
	t.Fatalf("no %T named %s in %v", zero, name, r.names())
	return zero
}

func examples(t *testing.T) []string {
	files, err := filepath.Glob("../values/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("want the example values files in values/, got %v (%v)", files, err)
	}
	return files
}

// Every example validates, renders into objects that decode strictly, gives the agent a ConfigMap that it
// can load and that passes validation, and keeps the worker pod within Pod Security "restricted".
func TestExamplesRender(t *testing.T) {
	t.Parallel()
	for _, f := range examples(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			r := render(t, []string{f})
			user, err := Load([]string{f}, nil)
			if err != nil {
				t.Fatal(err)
			}
			dep := find[*appsv1.Deployment](t, r, "ow-octo-worker")
			if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || *dep.Spec.Replicas != 1 {
				t.Errorf("worker Deployment: strategy %s replicas %d, want Recreate and 1", dep.Spec.Strategy.Type, *dep.Spec.Replicas)
			}
			pod := dep.Spec.Template.Spec
			c := pod.Containers[0]
			if diff := cmp.Diff([]string{"agent", "--values", "/etc/octo-worker/values.yaml", "--health-listen", ":8081"}, c.Args); diff != "" {
				t.Errorf("agent args (-want +got):\n%s", diff)
			}
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name)
			}
			for _, want := range []string{"OCTO_REGISTRATION_TOKEN", "OCTO_NAMESPACE", "OCTO_POD_NAME", "OCTO_RELEASE_NAME"} {
				if !slices.Contains(env, want) {
					t.Errorf("worker env lacks %s: %v", want, env)
				}
			}
			if c.Image != user.Image.Ref("0.1.0") {
				t.Errorf("worker image %s, want %s", c.Image, user.Image.Ref("0.1.0"))
			}
			if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("probes: %+v %+v", c.LivenessProbe.HTTPGet, c.ReadinessProbe.HTTPGet)
			}
			sc := c.SecurityContext
			if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				!slices.Contains(sc.Capabilities.Drop, "ALL") || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("worker pod is not within Pod Security restricted: %+v %+v", pod.SecurityContext, sc)
			}

			// The agent reads the ConfigMap: it must load, validate, and hold no token.
			cm := find[*corev1.ConfigMap](t, r, "ow-octo-worker")
			p := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(p, []byte(cm.Data["values.yaml"]), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := LoadAndValidate([]string{p}, nil)
			if err != nil {
				t.Fatalf("the agent could not load its ConfigMap: %v", err)
			}
			eff := l.Values
			if eff.Worker.RegistrationToken != "" || strings.Contains(cm.Data["values.yaml"], "REPLACE-WITH") {
				t.Errorf("the ConfigMap holds the registration token")
			}
			if eff.Worker.Name != "ow" || eff.Image.Tag == "" || eff.ScriptPods.ServiceAccount.Name == "" {
				t.Errorf("effective values not resolved: name %q tag %q script SA %q", eff.Worker.Name, eff.Image.Tag, eff.ScriptPods.ServiceAccount.Name)
			}
			tokenRef := c.Env[slices.Index(env, "OCTO_REGISTRATION_TOKEN")].ValueFrom.SecretKeyRef
			if tokenRef.Name != eff.Worker.RegistrationTokenSecret.Name || tokenRef.Key != eff.Worker.RegistrationTokenSecret.Key {
				t.Errorf("token env %s/%s but ConfigMap names %+v", tokenRef.Name, tokenRef.Key, eff.Worker.RegistrationTokenSecret)
			}
			if user.Worker.RegistrationTokenSecret.Name == "" {
				s := find[*corev1.Secret](t, r, tokenRef.Name)
				if s.StringData[tokenRef.Key] != user.Worker.RegistrationToken {
					t.Errorf("registration Secret holds %q", s.StringData[tokenRef.Key])
				}
			}
			if !strings.Contains(r.notes, "ow") {
				t.Errorf("NOTES.txt does not render: %q", r.notes)
			}
		})
	}
}

// The RBAC objects differ with the script permission options; each case lists what the chart must create.
func TestScriptPermissions(t *testing.T) {
	t.Parallel()
	base := []string{
		"ConfigMap /ow-octo-worker", "Deployment /ow-octo-worker", "Role /ow-octo-worker", "RoleBinding /ow-octo-worker",
		"Secret /ow-octo-worker-registration", "ServiceAccount /ow-octo-worker", "ServiceAccount deploy/ow-octo-worker-scripts",
		"Job /ow-octo-worker-values-check", // the pre-install/pre-upgrade hook
		"Job /ow-octo-worker-deregister",   // the pre-delete hook
	}
	cases := []struct {
		name      string
		sets      []string
		extra     []string
		automount bool
	}{
		{"no permissions", nil, nil, false},
		{"namespace rules", []string{"scriptPods.serviceAccount.rules[0].apiGroups={apps}", "scriptPods.serviceAccount.rules[0].resources={deployments}", "scriptPods.serviceAccount.rules[0].verbs={get,patch}"},
			[]string{"Role deploy/ow-octo-worker-scripts", "RoleBinding deploy/ow-octo-worker-scripts"}, true},
		{"cluster role cluster-wide", []string{"scriptPods.serviceAccount.clusterRole=view"},
			[]string{"ClusterRole /deploy-ow-octo-worker-worker-read", "ClusterRoleBinding /deploy-ow-octo-worker-scripts", "ClusterRoleBinding /deploy-ow-octo-worker-worker-read"}, true},
		{"cluster role without self-update", []string{"scriptPods.serviceAccount.clusterRole=view", "selfUpdate.enabled=false"},
			[]string{"ClusterRoleBinding /deploy-ow-octo-worker-scripts"}, true},
		{"cluster role in target namespaces", []string{"scriptPods.serviceAccount.clusterRole=edit", "scriptPods.serviceAccount.targetNamespaces={a,deploy}"},
			[]string{"Role a/ow-octo-worker-worker-read", "RoleBinding a/ow-octo-worker-scripts-clusterrole", "RoleBinding a/ow-octo-worker-worker-read", "RoleBinding deploy/ow-octo-worker-scripts-clusterrole"}, true},
		{"existing script account", []string{"scriptPods.serviceAccount.create=false", "scriptPods.serviceAccount.name=deployer"}, []string{"-ServiceAccount deploy/ow-octo-worker-scripts"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, []string{"../values/defaults.yaml"}, tc.sets...)
			want := append([]string{}, base...)
			for _, e := range tc.extra {
				if strings.HasPrefix(e, "-") {
					want = slices.DeleteFunc(want, func(s string) bool { return s == e[1:] })
					continue
				}
				want = append(want, e)
			}
			sort.Strings(want)
			if diff := cmp.Diff(want, r.names()); diff != "" {
				t.Fatalf("objects (-want +got):\n%s", diff)
			}
			for _, o := range r.objs {
				if sa, ok := o.(*corev1.ServiceAccount); ok && sa.Name == "ow-octo-worker-scripts" {
					if got := sa.AutomountServiceAccountToken != nil && *sa.AutomountServiceAccountToken; got != tc.automount {
						t.Errorf("script ServiceAccount automount %v, want %v", got, tc.automount)
					}
				}
			}
		})
	}
}

// Helm itself enforces the generated values.schema.json: values that skip chartgen's checks are still
// refused when the chart renders.
func TestHelmEnforcesSchema(t *testing.T) {
	t.Parallel()
	ch, err := EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	user := map[string]any{"worker": map[string]any{"pools": []any{"a"}, "registrationToken": "t"}}
	_, err = Render(context.Background(), ch, RenderOptions{Release: "ow", Namespace: "deploy"}, user)
	if err == nil || !strings.Contains(err.Error(), "serverUrl") {
		t.Fatalf("rendering without worker.serverUrl: %v, want a schema error naming serverUrl", err)
	}
}

// Each file in testdata/broken is rejected, and the problems name exactly the paths its "# want:" lines list.
func TestBrokenCorpus(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/broken/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("want a corpus of broken values files, got %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			want := wantPaths(t, f)
			_, err := LoadAndValidate([]string{f}, nil)
			var got []string
			for _, p := range problemsOf(t, err) {
				if p.File != f && p.File != "" {
					t.Errorf("problem %q attributed to %q, want %q", p, p.File, f)
				}
				got = append(got, p.Path)
			}
			sort.Strings(got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("problem paths (-want +got):\n%s\n%v", diff, err)
			}
		})
	}
}

func wantPaths(t *testing.T, file string) []string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var want []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
			want = append(want, strings.TrimSpace(p))
		}
	}
	if len(want) == 0 {
		t.Fatalf("%s has no '# want: <path>' line", file)
	}
	sort.Strings(want)
	return want
}

// The tools image given as one reference reaches the worker's ConfigMap as that reference, and the agent reads
// it back as repository and tag.
func TestToolsImageAsOneReference(t *testing.T) {
	t.Parallel()
	r := render(t, []string{"../values/defaults.yaml"}, "scriptPods.worker.image=debian:bookworm")
	cm := find[*corev1.ConfigMap](t, r, "ow-octo-worker")
	l, err := Input{Files: []Source{{Name: "configmap", Data: []byte(cm.Data["values.yaml"])}}}.Check()
	if err != nil {
		t.Fatalf("the agent could not load its ConfigMap: %v", err)
	}
	if ref := l.Values.ScriptPods.Worker.Image.Ref("0.1.0"); ref != "debian:bookworm" {
		t.Errorf("tools image %s, want debian:bookworm", ref)
	}
}
