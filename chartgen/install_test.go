package chartgen

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// The printed command survives a real shell: bash splits it back into exactly Args(); the values helm's own
// flag handling (pkg/cli/values, what the helm CLI runs) builds from those arguments are the values the
// command validated; the token is in a file only its owner reads; the chart archive it names loads.
func TestInstallCommandAsHelmReadsIt(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	dir := t.TempDir()
	user, err := ReadFiles([]string{"../values/autoscaling.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	user.Set = []string{"scriptPods.pendingTimeout=20m", "scriptPods.resources.requests.cpu=1", "worker.capabilities={a,b}"}
	user.SetString = []string{"image.tag=1.10"}
	cmd := InstallCommand{
		Release: "ow", Namespace: "deploy", Dir: dir,
		ServerURL:         "https://deploy.example.com/x,y?a=$HOME",
		RegistrationToken: `it's "a" tok,en \ $(rm -rf /) 123`,
		Pools:             []string{"42", "true", "green"},
		User:              user,
	}
	want, err := cmd.Check()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	wrote, err := cmd.Write(func(d string) (string, error) { return Package(ch, "", "", d) })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{filepath.Join(dir, "octo-worker-0.1.0.tgz"), cmd.ValuesFile()}, wrote); diff != "" {
		t.Errorf("files written (-want +got):\n%s", diff)
	}
	if _, err := loader.Load(cmd.ChartArchive("0.1.0")); err != nil {
		t.Errorf("the written chart archive does not load: %v", err)
	}
	st, err := os.Stat(cmd.ValuesFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("values file %s: %v, mode %v, want 0600", cmd.ValuesFile(), err, st.Mode())
	}

	line := cmd.String("0.1.0")
	if strings.Contains(line, "tok,en") {
		t.Errorf("the registration token is on the command line: %s", line)
	}
	out, err := exec.Command("bash", "-c", `f() { printf '%s\0' "$@"; }; f `+strings.TrimPrefix(line, "helm ")).Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if diff := cmp.Diff(cmd.Args("0.1.0"), args); diff != "" {
		t.Fatalf("arguments after the shell (-want +got):\n%s\n%s", diff, line)
	}

	var opts values.Options
	for i := 4; i < len(args); i++ {
		switch args[i] {
		case "-f":
			opts.ValueFiles = append(opts.ValueFiles, args[i+1])
		case "--set":
			opts.Values = append(opts.Values, args[i+1])
		case "--set-string":
			opts.StringValues = append(opts.StringValues, args[i+1])
		case "--namespace":
		case "--create-namespace":
			continue
		default:
			t.Fatalf("unexpected argument %q in %s", args[i], line)
		}
		i++
	}
	got, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		t.Fatalf("helm's value flags: %v", err)
	}
	if diff := cmp.Diff(want.User, got); diff != "" {
		t.Fatalf("user values helm would store (-install +helm):\n%s", diff)
	}
	w := want.Values.Worker
	if w.RegistrationToken != cmd.RegistrationToken || w.ServerURL != cmd.ServerURL || !cmp.Equal(w.Pools, cmd.Pools) {
		t.Fatalf("token %q, url %q, pools %q did not survive", w.RegistrationToken, w.ServerURL, w.Pools)
	}
}

func TestInstallCommandRefusesInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cmd   InstallCommand
		paths []string
	}{
		{"credentials in the URL", InstallCommand{Release: "ow", Namespace: "ns", ServerURL: "https://user:pw@deploy.example.com", Pools: []string{"a"}, RegistrationToken: "t"},
			[]string{"worker.serverUrl"}},
		{"no token", InstallCommand{Release: "ow", Namespace: "ns", ServerURL: "https://deploy.example.com", Pools: []string{"a"}},
			[]string{"worker.registrationToken"}},
		{"namespace", InstallCommand{Release: "ow", Namespace: "Team_A", ServerURL: "https://x.example", Pools: []string{"a"}, RegistrationToken: "t"},
			[]string{"Team_A"}},
		{"release", InstallCommand{Release: strings.Repeat("r", 54), Namespace: "ns", ServerURL: "https://x.example", Pools: []string{"a"}, RegistrationToken: "t"},
			[]string{strings.Repeat("r", 54)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.cmd.Check()
			var paths []string
			for _, p := range problemsOf(t, err) {
				paths = append(paths, p.Path)
			}
			if diff := cmp.Diff(tc.paths, paths); diff != "" {
				t.Fatalf("problems (-want +got):\n%s\n%v", diff, err)
			}
		})
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
