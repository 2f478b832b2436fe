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
			wantProblems(t, tc.want, err)
		})
	}
}

// wantProblems checks that err lists exactly the want problems (file and path), each with a message.
func wantProblems(t *testing.T, want []Problem, err error) {
	t.Helper()
	got := problemsOf(t, err)
	for i := range got {
		if got[i].Message == "" {
			t.Errorf("problem %d has no message", i)
		}
		got[i].Message = ""
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("problems (-want +got):\n%s\nerror: %v", diff, err)
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
		{"log limit below 1Mi", func(v *Values) { v.ScriptPods.LogLimit = "512Ki" }, []string{"scriptPods.logLimit"}},
		{"log limit above 10Gi", func(v *Values) { v.ScriptPods.LogLimit = "11Gi" }, []string{"scriptPods.logLimit"}},
		{"log limit 0", func(v *Values) { v.ScriptPods.LogLimit = "0" }, []string{"scriptPods.logLimit"}},
		{"log limit empty: the default", func(v *Values) { v.ScriptPods.LogLimit = "" }, nil},
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
		{"warm pool without priority class", func(v *Values) { v.ScriptPods.WarmPool.Enabled = true }, []string{"scriptPods.warmPool.priorityClassName"}},
		{"warm pool with its own class", func(v *Values) { v.ScriptPods.WarmPool.Enabled, v.ScriptPods.WarmPool.CreatePriorityClass = true, true }, nil},
		{"warm pool replicas", func(v *Values) { v.ScriptPods.WarmPool.Replicas = 0 }, []string{"scriptPods.warmPool.replicas"}},
		{"warm pool memory", func(v *Values) { v.ScriptPods.WarmPool.Resources.Memory = "lots" }, []string{"scriptPods.warmPool.resources.memory"}},
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

// The value flags mean what they mean to helm (pkg/strvals, applied in helm's order), so chartgen refuses what
// helm refuses (a number where a string belongs) and accepts what helm accepts (a number of CPUs, a list with
// commas, an image as one reference).
func TestHelmValueFlags(t *testing.T) {
	t.Parallel()
	tokenFile := writeFile(t, "token", "from-a-file")
	base := Source{Name: "v.yaml", Data: []byte(minimal)}
	cases := []struct {
		name  string
		in    Input
		check func(t *testing.T, v Values)
		want  []Problem // paths and files only
	}{
		{name: "a number of CPUs", in: Input{Set: []string{"scriptPods.resources.requests.cpu=1", "scriptPods.resources.maxRequests.cpu=4"}},
			check: func(t *testing.T, v Values) {
				if r := v.ScriptPods.Resources; r.Requests.CPU != "1" || r.MaxRequests.CPU != "4" {
					t.Errorf("cpu %q max %q", r.Requests.CPU, r.MaxRequests.CPU)
				}
			}},
		{name: "a list with commas", in: Input{Set: []string{"worker.pools={a,b}"}},
			check: func(t *testing.T, v Values) {
				if !cmp.Equal(v.Worker.Pools, []string{"a", "b"}) {
					t.Errorf("pools %q", v.Worker.Pools)
				}
			}},
		{name: "a number for a tag", in: Input{Set: []string{"scriptPods.worker.image.tag=2025"}},
			want: []Problem{{File: SetSource, Path: "scriptPods.worker.image.tag"}}},
		{name: "a number for a pool", in: Input{Set: []string{"worker.pools={42}"}},
			want: []Problem{{File: SetSource, Path: "worker.pools[0]"}}},
		{name: "--set-string keeps strings", in: Input{SetString: []string{"scriptPods.worker.image.tag=2025", "worker.pools={42,true}"}},
			check: func(t *testing.T, v Values) {
				if v.ScriptPods.Worker.Image.Tag != "2025" || !cmp.Equal(v.Worker.Pools, []string{"42", "true"}) {
					t.Errorf("tag %q pools %q", v.ScriptPods.Worker.Image.Tag, v.Worker.Pools)
				}
			}},
		{name: "--set-string after --set", in: Input{Set: []string{"image.tag=a"}, SetString: []string{"image.tag=b"}},
			check: func(t *testing.T, v Values) {
				if v.Image.Tag != "b" {
					t.Errorf("tag %q", v.Image.Tag)
				}
			}},
		{name: "--set-json", in: Input{SetJSON: []string{`worker.pools=["x","y"]`, `scriptPods.nodeSelector={"pool":"deploy"}`}},
			check: func(t *testing.T, v Values) {
				if !cmp.Equal(v.Worker.Pools, []string{"x", "y"}) || v.ScriptPods.NodeSelector["pool"] != "deploy" {
					t.Errorf("pools %q nodeSelector %v", v.Worker.Pools, v.ScriptPods.NodeSelector)
				}
			}},
		{name: "--set-file", in: Input{SetFile: []string{"worker.registrationToken=" + tokenFile}},
			check: func(t *testing.T, v Values) {
				if v.Worker.RegistrationToken != "from-a-file" {
					t.Errorf("token %q", v.Worker.RegistrationToken)
				}
			}},
		{name: "--set-literal", in: Input{SetLiteral: []string{"worker.registrationToken=a,b={c}"}},
			check: func(t *testing.T, v Values) {
				if v.Worker.RegistrationToken != "a,b={c}" {
					t.Errorf("token %q", v.Worker.RegistrationToken)
				}
			}},
		{name: "the tools image as one reference", in: Input{Set: []string{"scriptPods.worker.image=debian:bookworm"}},
			check: func(t *testing.T, v Values) {
				if img := v.ScriptPods.Worker.Image; img.Repository != "debian" || img.Tag != "bookworm" || img.Ref("x") != "debian:bookworm" {
					t.Errorf("image %+v", img)
				}
			}},
		{name: "the tools image by digest", in: Input{Set: []string{"scriptPods.worker.image=ghcr.io/o/t@sha256:" + strings.Repeat("a", 64)}},
			check: func(t *testing.T, v Values) {
				if ref := v.ScriptPods.Worker.Image.Ref("x"); ref != "ghcr.io/o/t@sha256:"+strings.Repeat("a", 64) {
					t.Errorf("image %s", ref)
				}
			}},
		{name: "the worker image is not one reference", in: Input{Set: []string{"image=ghcr.io/o/w:1"}},
			want: []Problem{{File: SetSource, Path: "image"}}},
		{name: "a request above maxRequests", in: Input{Set: []string{"scriptPods.resources.requests.cpu=5000m"}},
			want: []Problem{{File: SetSource, Path: "scriptPods.resources.requests.cpu"}}},
		{name: "docker", in: Input{Set: []string{"worker.capabilities={docker}"}},
			want: []Problem{{File: SetSource, Path: "worker.capabilities[0]"}}},
		{name: "root", in: Input{Set: []string{"podSecurityContext.runAsUser=0"}},
			want: []Problem{{File: SetSource, Path: "podSecurityContext.runAsUser"}}},
		{name: "zero and negative quantities", in: Input{Set: []string{"resources.requests.cpu=0", "scriptPods.resources.requests.memory=-5Gi"}},
			want: []Problem{{File: SetSource, Path: "resources.requests.cpu"}, {File: SetSource, Path: "scriptPods.resources.requests.memory"}}},
		{name: "unparsable", in: Input{Set: []string{"worker.pools={a"}},
			want: []Problem{{File: SetSource}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := tc.in
			in.Files = []Source{base}
			l, err := in.Check()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, l.Values)
				return
			}
			wantProblems(t, tc.want, err)
		})
	}
}

// Loaded.User holds what the user supplied and nothing of the defaults: helm stores it as the release's
// values, so a later chart's new defaults take effect.
func TestUserValuesAreOnlyWhatWasSupplied(t *testing.T) {
	t.Parallel()
	l, err := Input{Files: []Source{{Name: "v.yaml", Data: []byte(minimal)}}, Set: []string{"worker.concurrency=3"}}.Check()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"worker": map[string]any{
		"serverUrl": "https://deploy.example.com", "pools": []any{"default"}, "registrationToken": "tok", "concurrency": int64(3)}}
	if diff := cmp.Diff(want, l.User); diff != "" {
		t.Fatalf("user values (-want +got):\n%s", diff)
	}
}

func TestValuesFileLimits(t *testing.T) {
	t.Parallel()
	big := writeFile(t, "big.yaml", minimal+"# "+strings.Repeat("x", MaxValuesFileSize)+"\n")
	if _, err := ReadFiles([]string{big}); err == nil || !strings.Contains(err.Error(), "256 KiB") || !strings.Contains(err.Error(), "at most") {
		t.Errorf("a values file over the limit: %v, want its size and the limit", err)
	}
	_, err := Input{SetFile: []string{"worker.registrationToken=" + big}}.Load()
	if ps := problemsOf(t, err); len(ps) != 1 || ps[0].File != SetFileSource || !strings.Contains(ps[0].Message, "at most") {
		t.Errorf("--set-file over the limit: %v", err)
	}
}
