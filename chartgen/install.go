package chartgen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// InstallCommand describes an `helm upgrade --install` of the worker, as `octo-worker install` takes it. The
// command it prints runs as printed with the upstream helm CLI: the chart is a local archive (Write puts the
// embedded chart there) unless Chart names a registry reference, and the values `install` itself sets (server,
// pools, token) travel in a values file, typed as the chart wants them, so nothing secret sits on the command
// line and no pool named "42" turns into a number.
type InstallCommand struct {
	Release      string
	Namespace    string
	Chart        string // a chart reference for helm (repo/name, oci://...); "" means the archive Write writes
	ChartVersion string // --version with Chart; "" means none
	Dir          string // where Write puts the chart archive and the values file; "" means "."

	ServerURL         string
	RegistrationToken string // written into the values file (mode 0600)
	TokenSecret       string // or: an existing Secret in the namespace that holds the token (key "token")
	Pools             []string
	User              Input // the user's own -f files and value flags, passed to helm as given

	Wait    bool
	Timeout time.Duration
}

// ReleaseNameMax is helm's limit on a release name's length.
const ReleaseNameMax = 53

// ChartArchive is the path Write gives the embedded chart of the given version.
func (c InstallCommand) ChartArchive(version string) string {
	return c.path(fmt.Sprintf("octo-worker-%s.tgz", version))
}

// ValuesFile is the path of the values file Write writes.
func (c InstallCommand) ValuesFile() string {
	return c.path(c.Release + "-values.yaml")
}

func (c InstallCommand) path(name string) string {
	dir := c.Dir
	if dir == "" {
		dir = "."
	}
	p := filepath.Join(dir, name)
	if !filepath.IsAbs(p) && !strings.HasPrefix(p, ".") {
		p = "./" + p // a local path, not a repo/name reference, to helm
	}
	return p
}

// generated is the values file's content: what install's own flags set.
func (c InstallCommand) generated() map[string]any {
	w := map[string]any{}
	if c.ServerURL != "" {
		w["serverUrl"] = c.ServerURL
	}
	if len(c.Pools) > 0 {
		w["pools"] = c.Pools
	}
	if c.RegistrationToken != "" {
		w["registrationToken"] = c.RegistrationToken
	}
	if c.TokenSecret != "" {
		w["registrationTokenSecret"] = map[string]any{"name": c.TokenSecret, "key": "token"}
	}
	return map[string]any{"worker": w}
}

func (c InstallCommand) valuesYAML() ([]byte, error) {
	b, err := yaml.Marshal(c.generated())
	if err != nil {
		return nil, fmt.Errorf("encoding the install values: %w", err)
	}
	header := "# Written by `octo-worker install`: the worker's server, pools and registration token. It holds a secret:\n" +
		"# keep it private (mode 0600) and delete it once the release is installed; upgrades use --reuse-values.\n"
	return append([]byte(header), b...), nil
}

// Input returns the values helm will install: the user's files, then the values file, then the user's flags.
func (c InstallCommand) Input() (Input, error) {
	data, err := c.valuesYAML()
	if err != nil {
		return Input{}, err
	}
	in := c.User
	in.Files = append(append([]Source{}, c.User.Files...), Source{Name: c.ValuesFile(), Data: data})
	return in, nil
}

// Check validates the release, the namespace and the values the command would install, with the same problems
// `chartgen validate` reports.
func (c InstallCommand) Check() (Loaded, error) {
	var ps []Problem
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		ps = append(ps, Problem{File: "--namespace", Path: c.Namespace, Message: "is not a namespace name: " + strings.Join(errs, "; ")})
	}
	if errs := validation.IsDNS1123Subdomain(c.Release); len(errs) > 0 || len(c.Release) > ReleaseNameMax {
		ps = append(ps, Problem{File: "--release", Path: c.Release, Message: fmt.Sprintf("is not a release name: lowercase letters, digits, '-' and '.', at most %d characters", ReleaseNameMax)})
	}
	if c.RegistrationToken != "" && c.TokenSecret != "" {
		ps = append(ps, Problem{File: "--registration-token", Message: "give either --registration-token or --registration-token-secret, not both"})
	}
	if len(ps) > 0 {
		return Loaded{}, &ProblemsError{Problems: ps}
	}
	in, err := c.Input()
	if err != nil {
		return Loaded{}, err
	}
	return in.Check()
}

// Write writes the values file (mode 0600, as it may hold the token) and, unless Chart names a reference, the
// chart archive (from the chart given, normally the embedded one). It returns the files it wrote.
func (c InstallCommand) Write(archive func(dir string) (string, error)) ([]string, error) {
	var wrote []string
	if c.Chart == "" {
		p, err := archive(filepath.Dir(c.ChartArchive("x")))
		if err != nil {
			return nil, err
		}
		wrote = append(wrote, p)
	}
	data, err := c.valuesYAML()
	if err != nil {
		return nil, err
	}
	if err := writePrivate(c.ValuesFile(), data); err != nil {
		return nil, err
	}
	return append(wrote, c.ValuesFile()), nil
}

// writePrivate writes data to a file only its owner can read, also when the file existed with wider rights.
func writePrivate(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	err = errors.Join(f.Chmod(0o600), func() error { _, err := f.Write(data); return err }(), f.Close())
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// Args returns helm's arguments (without the leading "helm"), for a chart archive of the given version when
// Chart is empty.
func (c InstallCommand) Args(version string) []string {
	chart := c.Chart
	if chart == "" {
		chart = c.ChartArchive(version)
	}
	args := []string{"upgrade", "--install", c.Release, chart, "--namespace", c.Namespace, "--create-namespace"}
	if c.Chart != "" && c.ChartVersion != "" {
		args = append(args, "--version", c.ChartVersion)
	}
	for _, f := range c.User.Files {
		args = append(args, "-f", f.Name)
	}
	args = append(args, "-f", c.ValuesFile())
	for _, fl := range c.User.flags() {
		for _, e := range fl.exprs {
			args = append(args, fl.name, e)
		}
	}
	if c.Wait {
		args = append(args, "--wait")
		if c.Timeout > 0 {
			args = append(args, "--timeout", c.Timeout.String())
		}
	}
	return args
}

// String returns the command line a user pastes into a POSIX shell, every argument quoted as needed.
func (c InstallCommand) String(version string) string {
	parts := []string{"helm"}
	for _, a := range c.Args(version) {
		parts = append(parts, ShellQuote(a))
	}
	return strings.Join(parts, " ")
}

// ShellQuote quotes s for a POSIX shell: unchanged when it holds only safe characters, otherwise in single
// quotes with each ' written as '\”.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ValuesYAML is the content of the values file Write writes (it holds the registration token: keep it private).
func (c InstallCommand) ValuesYAML() ([]byte, error) { return c.valuesYAML() }
