package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolEnv names the environment variable that holds the path of each upstream CLI that scripts/build-clis.sh
// builds (`make clis`); `make e2e` sets them.
var toolEnv = map[string]string{
	"helm":    "OCTO_HELM",
	"kubectl": "OCTO_KUBECTL",
}

// ToolPath returns the path of the upstream CLI name ("helm" or "kubectl") from $OCTO_HELM or $OCTO_KUBECTL,
// or an error that says how to build it when the variable is unset or names no executable file.
func ToolPath(name string) (string, error) {
	env, ok := toolEnv[name]
	if !ok {
		return "", fmt.Errorf("no upstream CLI %q: scripts/build-clis.sh builds helm and kubectl", name)
	}
	how := fmt.Sprintf("build it with `make clis` and run the tests with `make e2e`, or set %s=$(scripts/build-clis.sh)/%s", env, name)
	p := os.Getenv(env)
	if p == "" {
		return "", fmt.Errorf("%s is not set: this test runs the upstream %s CLI; %s", env, name, how)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s=%s: %w; %s", env, p, err, how)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s=%s is not an executable file; %s", env, p, how)
	}
	return p, nil
}

// Tool returns the path of the upstream CLI name ("helm" or "kubectl"; see ToolPath) and fails the test,
// saying what to run, when it is not there. Tests that need the real clients fail rather than skip: the
// upstream CLIs are the contract the chart and the install command are held to.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := ToolPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// RunTool runs the upstream CLI name (see Tool) with args, without a cluster, in the test's working directory.
// Its environment is this process's, with HOME and helm's cache, config and data directories in a temporary directory of the test
// and KUBECONFIG naming a file that does not exist, so that nothing of the machine's user (a kubeconfig, helm
// repositories or plugins) takes part. env adds KEY=VALUE entries (later ones win). It logs the command line
// and returns what the CLI wrote to stdout and stderr, and its error (an *exec.ExitError when it ran and
// failed). It stops the CLI when the test's context ends.
func RunTool(t testing.TB, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	path := Tool(t, name)
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), path, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"HELM_CACHE_HOME="+filepath.Join(home, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "helm-config"),
		"HELM_DATA_HOME="+filepath.Join(home, "helm-data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err = cmd.Run()
	t.Logf("ran %s (%s): %s", quoteArgs(append(append(env[:len(env):len(env)], name), args...)), time.Since(start).Round(time.Millisecond), exitText(err))
	return out.String(), errOut.String(), err
}

// RunTool runs the upstream CLI name (see Tool) against the cluster, as its admin: KUBECONFIG is the
// cluster's admin kubeconfig (c.Kubeconfig). Otherwise as the package's RunTool.
func (c *Cluster) RunTool(t testing.TB, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return RunTool(t, []string{"KUBECONFIG=" + c.Kubeconfig}, name, args...)
}

// quoteArgs prints args as a shell would need them, for the log.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit 0"
	case errors.As(err, &ee):
		return fmt.Sprintf("exit %d", ee.ExitCode())
	default:
		return err.Error()
	}
}
