package chartgen

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/strvals"
)

// The printed command survives a real shell: bash splits it back into exactly Args(), and the values helm
// would parse from those arguments are the values the command validated.
func TestInstallCommandQuoting(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	cmd := InstallCommand{
		Release: "ow", Namespace: "deploy team", Chart: DefaultChartLocation, ChartVersion: "0.1.0",
		ServerURL:         "https://deploy.example.com/x,y?a=$HOME",
		RegistrationToken: `it's "a" tok,en \ $(rm -rf /) 123`,
		Pools:             []string{"blue", "green"},
		Files:             []string{"../values/autoscaling.yaml"},
		Sets:              []string{"scriptPods.pendingTimeout=20m", "image.tag=1.10"},
	}
	want, err := cmd.Validate()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-c", `f() { printf '%s\0' "$@"; }; f `+strings.TrimPrefix(cmd.String(), "helm ")).Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if diff := cmp.Diff(cmd.Args(), args); diff != "" {
		t.Fatalf("arguments after the shell (-want +got):\n%s\n%s", diff, cmd.String())
	}

	// Parse the arguments the way helm does and compare the resulting values.
	sets := map[string]any{}
	var files []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-f":
			files = append(files, args[i+1])
		case "--set":
			if err := strvals.ParseInto(args[i+1], sets); err != nil {
				t.Fatal(err)
			}
		case "--set-string":
			if err := strvals.ParseIntoString(args[i+1], sets); err != nil {
				t.Fatal(err)
			}
		}
	}
	srcs, err := readSources(files)
	if err != nil {
		t.Fatal(err)
	}
	setYAML, err := toMap(sets)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := jsonMarshal(setYAML)
	got, err := CheckSources(append(srcs, Source{Name: "sets", Data: b}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("values helm would install (-cmd +helm):\n%s", diff)
	}
	if got.Worker.RegistrationToken != cmd.RegistrationToken || got.Worker.ServerURL != cmd.ServerURL {
		t.Fatalf("token %q, url %q did not survive", got.Worker.RegistrationToken, got.Worker.ServerURL)
	}
}

func TestInstallCommandRefusesInvalid(t *testing.T) {
	t.Parallel()
	_, err := InstallCommand{Release: "ow", Namespace: "ns", ServerURL: "https://user:pw@deploy.example.com", Pools: []string{"a"}}.Validate()
	var paths []string
	for _, p := range problemsOf(t, err) {
		paths = append(paths, p.Path)
	}
	if diff := cmp.Diff([]string{"worker.serverUrl", "worker.registrationToken"}, paths); diff != "" {
		t.Fatalf("problems (-want +got):\n%s", diff)
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "''", "plain-1.0": "plain-1.0", "a b": "'a b'", "it's": `'it'\''s'`, "{a,b}": "'{a,b}'"} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
