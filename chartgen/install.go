package chartgen

import (
	"fmt"
	"strings"
	"time"
)

// DefaultChartLocation is where the printed install command finds the chart unless told otherwise.
const DefaultChartLocation = "oci://ghcr.io/octo-worker/charts/octo-worker"

// InstallCommand describes an `helm upgrade --install` of the worker, as `octo-worker install` takes it.
type InstallCommand struct {
	Release           string
	Namespace         string
	Chart             string // chart reference for helm: a repo/name, an oci:// URL, a directory or a .tgz
	ChartVersion      string // --version; empty: none (helm picks the latest, or the local chart's)
	ServerURL         string
	RegistrationToken string
	Pools             []string
	Files             []string // -f values files, in order
	Sets              []string // extra --set expressions, applied last
	Wait              bool
	Timeout           time.Duration
}

// ValueSets returns the --set expressions the command passes, in order: server, token, pools, then the
// user's own. Load(Files, ValueSets()) gives the values helm will install.
func (c InstallCommand) ValueSets() []string {
	var sets []string
	if c.ServerURL != "" {
		sets = append(sets, "worker.serverUrl="+escapeSetValue(c.ServerURL))
	}
	if c.RegistrationToken != "" {
		sets = append(sets, "worker.registrationToken="+escapeSetValue(c.RegistrationToken))
	}
	if len(c.Pools) > 0 {
		escaped := make([]string, len(c.Pools))
		for i, p := range c.Pools {
			escaped[i] = escapeSetValue(p)
		}
		sets = append(sets, "worker.pools={"+strings.Join(escaped, ",")+"}")
	}
	return append(sets, c.Sets...)
}

// escapeSetValue escapes the characters Helm's --set parser treats specially inside a value.
func escapeSetValue(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `,`, `\,`)
	return r.Replace(s)
}

// Args returns helm's arguments (without the leading "helm").
func (c InstallCommand) Args() []string {
	args := []string{"upgrade", "--install", c.Release, c.Chart, "--namespace", c.Namespace, "--create-namespace"}
	if c.ChartVersion != "" {
		args = append(args, "--version", c.ChartVersion)
	}
	for _, f := range c.Files {
		args = append(args, "-f", f)
	}
	for _, s := range c.ValueSets() {
		if strings.HasPrefix(s, "worker.registrationToken=") || strings.HasPrefix(s, "worker.serverUrl=") {
			// Strings even if they look like numbers or booleans.
			args = append(args, "--set-string", s)
			continue
		}
		args = append(args, "--set", s)
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
func (c InstallCommand) String() string {
	parts := []string{"helm"}
	for _, a := range c.Args() {
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

// Validate checks the values the command would install, with the same problems `chartgen validate` reports.
func (c InstallCommand) Validate() (Values, error) {
	if c.Release == "" || c.Namespace == "" {
		return Values{}, fmt.Errorf("release and namespace must be set")
	}
	return LoadAndValidate(c.Files, c.ValueSets())
}
