package chartgen

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// minimal is the least a user must set.
const minimal = `
worker:
  serverUrl: https://deploy.example.com
  pools: [default]
  registrationToken: tok
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var pe *ProblemsError
	if !errors.As(err, &pe) {
		t.Fatalf("want *ProblemsError, got %v", err)
	}
	return pe.Problems
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	a := writeFile(t, "a.yaml", minimal+`
  concurrency: 3
scriptPods:
  pendingTimeout: 5m
  resources:
    requests: {cpu: 100m}
`)
	b := writeFile(t, "b.yaml", `
worker:
  concurrency: 4
  pools: [blue, green]
`)
	v, err := Load([]string{a, b}, []string{"worker.concurrency=7", "image.tag=1.2", "scriptPods.backoffLimit=1"})
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Worker.ServerURL = "https://deploy.example.com"
	want.Worker.RegistrationToken = "tok"
	want.Worker.Pools = []string{"blue", "green"} // lists replace
	want.Worker.Concurrency = 7                   // --set wins over files
	want.Image.Tag = "1.2"                        // a number from --set becomes the string the type wants
	want.ScriptPods.PendingTimeout = Duration(5 * time.Minute)
	want.ScriptPods.Resources.Requests.CPU = "100m" // maps merge: memory keeps its default
	want.ScriptPods.BackoffLimit = 1
	if diff := cmp.Diff(want, v); diff != "" {
		t.Fatalf("Load (-want +got):\n%s", diff)
	}
	if ps := v.Validate(); len(ps) != 0 {
		t.Fatalf("valid values reported problems: %v", ps)
	}
}

func TestLoadSchemaProblems(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		sets       []string
		want       []Problem
	}{
		{"unknown key", minimal + "  concurency: 3\n", nil,
			[]Problem{{File: "v.yaml", Path: "worker.concurency"}}},
		{"wrong case", minimal + "  serverURL: x\n", nil,
			[]Problem{{File: "v.yaml", Path: "worker.serverURL"}}},
		{"number for tag", minimal + "image:\n  tag: 1.5\n", nil,
			[]Problem{{File: "v.yaml", Path: "image.tag"}}},
		{"bad duration", minimal + "scriptPods:\n  pendingTimeout: 15 minutes\n", nil,
			[]Problem{{File: "v.yaml", Path: "scriptPods.pendingTimeout"}}},
		{"bad enum", minimal + "image:\n  pullPolicy: Sometimes\n", nil,
			[]Problem{{File: "v.yaml", Path: "image.pullPolicy"}}},
		{"too small", minimal, []string{"worker.concurrency=0"},
			[]Problem{{File: SetSource, Path: "worker.concurrency"}}},
		{"bad pool name from --set", minimal, []string{"worker.pools={Blue}"},
			[]Problem{{File: SetSource, Path: "worker.pools[0]"}}},
		{"rule without verbs", minimal + "scriptPods:\n  serviceAccount:\n    rules:\n    - apiGroups: ['']\n      resources: [pods]\n", nil,
			[]Problem{{File: "v.yaml", Path: "scriptPods.serviceAccount.rules[0].verbs"}}},
		{"affinity typo", minimal + "affinity:\n  nodeAfinity: {}\n", nil,
			[]Problem{{File: "v.yaml", Path: "affinity"}}},
		{"not yaml", "worker: [\n", nil,
			[]Problem{{File: "v.yaml"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := CheckSources([]Source{{Name: "v.yaml", Data: []byte(tc.yaml)}}, tc.sets)
			got := problemsOf(t, err)
			for i := range got {
				if got[i].Message == "" {
					t.Errorf("problem %d has no message", i)
				}
				got[i].Message = ""
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("problems (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

func TestValidateSemantic(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(*Values)
		paths  []string
	}{
		{"valid", func(*Values) {}, nil},
		{"no server", func(v *Values) { v.Worker.ServerURL = "" }, []string{"worker.serverUrl"}},
		{"relative server", func(v *Values) { v.Worker.ServerURL = "ftp://x" }, []string{"worker.serverUrl"}},
		{"no pools", func(v *Values) { v.Worker.Pools = nil }, []string{"worker.pools"}},
		{"duplicate pool", func(v *Values) { v.Worker.Pools = []string{"a", "a"} }, []string{"worker.pools[1]"}},
		{"both tokens", func(v *Values) { v.Worker.RegistrationTokenSecret.Name = "s" }, []string{"worker.registrationToken"}},
		{"no token", func(v *Values) { v.Worker.RegistrationToken = "" }, []string{"worker.registrationToken"}},
		{"docker", func(v *Values) { v.Worker.Capabilities = []string{"docker"} }, []string{"worker.capabilities[0]"}},
		{"request over max", func(v *Values) { v.ScriptPods.Resources.Requests.Memory = "8Gi" }, []string{"scriptPods.resources.requests.memory"}},
		{"request over limit", func(v *Values) { v.Resources.Requests.Memory = "1Gi" }, []string{"resources.requests.memory"}},
		{"bad quantity", func(v *Values) { v.ScriptPods.Resources.Requests.CPU = "lots" }, []string{"scriptPods.resources.requests.cpu"}},
		{"duration too short", func(v *Values) { v.ScriptPods.PendingTimeout = Seconds(1) }, []string{"scriptPods.pendingTimeout"}},
		{"bad image", func(v *Values) { v.Image.Repository = "Ghcr.io/Org/Name:1" }, []string{"image.repository"}},
		{"resourceNames with list", func(v *Values) {
			v.ScriptPods.ServiceAccount.Rules = []PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}, ResourceNames: []string{"a"}}}
		}, []string{"scriptPods.serviceAccount.rules[0].verbs[1]"}},
		{"bad verb", func(v *Values) {
			v.ScriptPods.ServiceAccount.Rules = []PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"Deployments"}, Verbs: []string{"read"}}}
		}, []string{"scriptPods.serviceAccount.rules[0].resources[0]", "scriptPods.serviceAccount.rules[0].verbs[0]"}},
		{"target namespaces without grants", func(v *Values) { v.ScriptPods.ServiceAccount.TargetNamespaces = []string{"apps"} }, []string{"scriptPods.serviceAccount.targetNamespaces"}},
		{"root script pods", func(v *Values) { v.ScriptPods.PodSecurityContext.RunAsNonRoot = new(bool) }, []string{"scriptPods.podSecurityContext.runAsNonRoot"}},
		{"privilege escalation", func(v *Values) { v.SecurityContext.AllowPrivilegeEscalation = nil }, []string{"securityContext.allowPrivilegeEscalation"}},
		{"existing SA without name", func(v *Values) { v.ServiceAccount.Create = false }, []string{"serviceAccount.name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := Defaults()
			v.Worker.ServerURL = "https://deploy.example.com"
			v.Worker.Pools = []string{"default"}
			v.Worker.RegistrationToken = "tok"
			tc.mutate(&v)
			var got []string
			for _, p := range v.Validate() {
				if p.Message == "" {
					t.Errorf("%s: empty message", p.Path)
				}
				got = append(got, p.Path)
			}
			if diff := cmp.Diff(tc.paths, got); diff != "" {
				t.Fatalf("problem paths (-want +got):\n%s\n%v", diff, v.Validate())
			}
		})
	}
}

func TestDefaultsNeedOnlyConnection(t *testing.T) {
	t.Parallel()
	_, err := CheckSources(nil, nil)
	var paths []string
	for _, p := range problemsOf(t, err) {
		paths = append(paths, p.Path)
	}
	want := []string{"worker.pools", "worker.registrationToken", "worker.serverUrl"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Fatalf("defaults alone (-want +got):\n%s", diff)
	}
	_, err = CheckSources(nil, []string{"worker.serverUrl=https://x.example", "worker.pools={a}"})
	if ps := problemsOf(t, err); len(ps) != 1 || ps[0].Path != "worker.registrationToken" {
		t.Fatalf("without a token: %v", ps)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"15m": "15m", "90s": "1m30s", "1h": "1h", "1h30m": "1h30m", "0": "0s", "250ms": "250ms"} {
		d, err := ParseDuration(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if d.String() != want {
			t.Errorf("%s formats as %s, want %s", in, d, want)
		}
	}
	if _, err := ParseDuration("-1s"); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative duration: %v", err)
	}
}
