package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/jobrunner"
)

// agentConfigFrom runs the agent command's flag parsing and configuration with args, without starting it.
func agentConfigFrom(t *testing.T, args ...string) (jobrunner.Config, error) {
	t.Helper()
	cmd := agentCommand()
	var cfg jobrunner.Config
	var cfgErr error
	cmd.Action = func(c *cli.Context) error {
		v, err := loadAgentValues(c.StringSlice("values"), c.StringSlice("set"))
		if err != nil {
			cfgErr = err
			return nil
		}
		cfg, cfgErr = agentConfig(c, v)
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"octo-worker", "agent"}, args...)); err != nil {
		t.Fatalf("parsing flags: %v", err)
	}
	return cfg, cfgErr
}

func writeValues(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAgentConfigPrecedence(t *testing.T) {
	// Not parallel: it sets environment variables.
	values := writeValues(t, `
worker:
  serverUrl: http://dispatch.example:8080
  name: from-file
  pools: [blue, green]
  concurrency: 7
image: {repository: registry.example/octo-worker, tag: "1.2.3"}
scriptPods:
  worker:
    image: {repository: registry.example/tools, tag: "9"}
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    maxRequests: {cpu: "1", memory: 1Gi}
  pendingTimeout: 3m
  defaultTimeout: 2h
  ttlSecondsAfterFinished: 30
`)
	t.Setenv("OCTO_NAMESPACE", "from-env")
	t.Setenv("OCTO_RELEASE_NAME", "rel")
	cfg, err := agentConfigFrom(t, "--values", values, "--set", "worker.concurrency=9", "--concurrency", "12")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"namespace (env)", cfg.Namespace, "from-env"},
		{"worker name (file)", cfg.WorkerName, "from-file"},
		{"pools (file)", strings.Join(cfg.Pools, ","), "blue,green"},
		{"concurrency (flag beats --set beats file)", cfg.Concurrency, 12},
		{"identity Secret (release)", cfg.IdentitySecret, "rel-identity"},
		{"worker image", cfg.WorkerImage, "registry.example/octo-worker:1.2.3"},
		{"tools image", cfg.ToolsImage, "registry.example/tools:9"},
		{"cpu request", cfg.Requests.Cpu().String(), "100m"},
		{"max memory", cfg.MaxRequests.Memory().String(), "1Gi"},
		{"pending timeout", cfg.PendingTimeout, 3 * time.Minute},
		{"TTL", cfg.TTLAfterFinish, 30 * time.Second},
		{"default timeout", cfg.DefaultTimeout, 2 * time.Hour},
		{"capabilities", strings.Join(cfg.Capabilities, ","), "kubernetes-job,custom-image"},
		{"no token mounted without grants", *cfg.AutomountToken, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestAgentConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, values string
		args         []string
		want         string
	}{
		{"no namespace", "worker: {serverUrl: 'http://x:1', pools: [a]}", nil, "namespace:"},
		{"no pools", "worker: {serverUrl: 'http://x:1'}", []string{"--namespace", "ns"}, "worker.pools"},
		{"bad quantity", "worker: {serverUrl: 'http://x:1', pools: [a]}\nscriptPods: {resources: {requests: {cpu: lots}}}", []string{"--namespace", "ns"}, "scriptPods.resources.requests.cpu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OCTO_NAMESPACE", "")
			_, err := agentConfigFrom(t, append([]string{"--values", writeValues(t, tc.values)}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
