package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/decode"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// submitCommand is `octo-worker submit`: one operation, optionally followed to its end.
func submitCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "submit",
		Usage: "submit one script step to a pool; with --follow, print its log and exit with its exit code",
		Description: "Exit codes with --follow: the script's exit code; 1 when it failed without one or was lost,\n" +
			"124 when it timed out, 130 when it was cancelled.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pool", Usage: "pool to run in", Required: true},
			&cli.StringFlag{Name: "script", Usage: "the script text"},
			&cli.StringFlag{Name: "file", Usage: "read the script from this file (- for stdin)"},
			&cli.StringFlag{Name: "syntax", Value: "bash", Usage: "bash, sh, python3 or pwsh"},
			&cli.StringFlag{Name: "name", Usage: "a name for the operation"},
			&cli.StringFlag{Name: "image", Usage: "container image for the step (default: the worker's tools image)"},
			&cli.StringSliceFlag{Name: "var", Usage: "variable NAME=VALUE (repeatable)"},
			&cli.StringSliceFlag{Name: "secret", Usage: "sensitive variable NAME=VALUE, masked in logs (repeatable; prefer NAME=@file or NAME=env:VAR to keep it off the command line)"},
			&cli.StringSliceFlag{Name: "attach", Usage: "file to place in the working directory, LOCAL[:PATH] (repeatable)"},
			&cli.StringFlag{Name: "cpu", Usage: "CPU request, e.g. 250m (capped by the worker)"},
			&cli.StringFlag{Name: "memory", Usage: "memory request, e.g. 512Mi (capped by the worker)"},
			&cli.DurationFlag{Name: "timeout", Usage: "time limit (default: the worker's)"},
			&cli.StringSliceFlag{Name: "capability", Usage: "required worker capability (repeatable)"},
			&cli.StringSliceFlag{Name: "package", Usage: "package to unpack into the working directory before the script runs, NAME@sha256:HEX or NAME@VERSION (repeatable; see `package push`)"},
			&cli.StringFlag{Name: "profile", Usage: "pod profile of the worker's scriptPods.profiles, e.g. gpu"},
			&cli.StringSliceFlag{Name: "node-selector", Usage: "node label KEY=VALUE, where the worker's scriptPods.allowOverrides allows it (repeatable)"},
			&cli.StringSliceFlag{Name: "toleration", Usage: "toleration KEY=VALUE:EFFECT, or KEY:EFFECT for any value, where allowed (repeatable)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "print the log as it arrives and exit with the operation's exit code"},
		},
		Action: runSubmit,
	})
}

func runSubmit(c *cli.Context) error {
	spec, err := specFromFlags(c)
	if err != nil {
		return err
	}
	if err := validate.OperationSpec("", &spec, false); err != nil {
		return cli.Exit(flagError(err), 2)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	op, err := cl.Submit(c.Context, spec)
	if err != nil {
		return err
	}
	if !c.Bool("follow") {
		return output(c, op, func(w io.Writer) { fmt.Fprintln(w, op.ID) })
	}
	fmt.Fprintf(c.App.ErrWriter, "submitted %s to pool %s\n", esc(op.ID), esc(op.Pool))
	end, err := printLogs(c, cl, op.ID, 0, true, "")
	if err != nil {
		return err
	}
	return endExit(c, op.ID, end)
}

// flagError names the flag behind a validation error of a spec built from flags.
func flagError(err error) string {
	var ve *validate.Error
	if !errors.As(err, &ve) {
		return err.Error()
	}
	flag := map[string]string{"pool": "--pool", "script": "--script/--file", "syntax": "--syntax", "image": "--image",
		"requests.cpu": "--cpu", "requests.memory": "--memory", "timeout_seconds": "--timeout", "name": "--name"}[ve.Field]
	switch {
	case flag != "":
	case strings.HasPrefix(ve.Field, "variables"):
		flag = "--var/--secret"
	case strings.HasPrefix(ve.Field, "files"):
		flag = "--attach"
	case strings.HasPrefix(ve.Field, "capabilities"):
		flag = "--capability"
	case strings.HasPrefix(ve.Field, "packages"):
		flag = "--package"
	case ve.Field == "profile":
		flag = "--profile"
	case strings.HasPrefix(ve.Field, "overrides.node_selector"):
		flag = "--node-selector"
	case strings.HasPrefix(ve.Field, "overrides.tolerations"):
		flag = "--toleration"
	default:
		flag = ve.Field
	}
	return flag + ": " + ve.Message
}

func specFromFlags(c *cli.Context) (api.OperationSpec, error) {
	spec := api.OperationSpec{Name: c.String("name"), Pool: c.String("pool"), Syntax: c.String("syntax"), Image: c.String("image"),
		Capabilities: c.StringSlice("capability"), Packages: c.StringSlice("package"), Profile: c.String("profile")}
	o, err := overridesFromFlags(c.StringSlice("node-selector"), c.StringSlice("toleration"))
	if err != nil {
		return spec, err
	}
	spec.Overrides = o
	switch script, file := c.String("script"), c.String("file"); {
	case script != "" && file != "":
		return spec, cli.Exit("give --script or --file, not both", 2)
	case script != "":
		spec.Script = script
	case file == "-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return spec, fmt.Errorf("--file -: reading stdin: %w", err)
		}
		spec.Script = string(b)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return spec, cli.Exit("--file: "+err.Error(), 2)
		}
		spec.Script = string(b)
	default:
		return spec, cli.Exit("give the script with --script TEXT or --file FILE", 2)
	}
	for _, v := range c.StringSlice("var") {
		name, value, ok := strings.Cut(v, "=")
		if !ok {
			return spec, cli.Exit(fmt.Sprintf("--var %q: write NAME=VALUE", v), 2)
		}
		spec.Variables = append(spec.Variables, api.Variable{Name: name, Value: value})
	}
	for _, v := range c.StringSlice("secret") {
		name, value, ok := strings.Cut(v, "=")
		if !ok {
			return spec, cli.Exit(fmt.Sprintf("--secret %q: write NAME=VALUE, NAME=@FILE or NAME=env:VAR", name), 2)
		}
		switch {
		case strings.HasPrefix(value, "@"):
			b, err := os.ReadFile(value[1:])
			if err != nil {
				return spec, cli.Exit(fmt.Sprintf("--secret %s: %v", name, err), 2)
			}
			value = strings.TrimRight(string(b), "\r\n")
		case strings.HasPrefix(value, "env:"):
			env, ok := os.LookupEnv(value[4:])
			if !ok {
				return spec, cli.Exit(fmt.Sprintf("--secret %s: environment variable %s is not set", name, value[4:]), 2)
			}
			value = env
		}
		spec.Variables = append(spec.Variables, api.Variable{Name: name, Value: value, Sensitive: true})
	}
	for _, a := range c.StringSlice("attach") {
		local, dest, ok := strings.Cut(a, ":")
		if !ok {
			dest = filepath.Base(local)
		}
		b, err := os.ReadFile(local)
		if err != nil {
			return spec, cli.Exit("--attach: "+err.Error(), 2)
		}
		mode := uint32(0o644)
		if info, err := os.Stat(local); err == nil {
			mode = uint32(info.Mode().Perm())
		}
		spec.Files = append(spec.Files, api.File{Path: path.Clean(filepath.ToSlash(dest)), Content: b, Mode: mode})
	}
	if cpu, mem := c.String("cpu"), c.String("memory"); cpu != "" || mem != "" {
		spec.Requests = &api.Resources{CPU: cpu, Memory: mem}
	}
	if d := c.Duration("timeout"); d > 0 {
		spec.TimeoutSeconds = int((d + time.Second - 1) / time.Second)
	}
	return spec, nil
}

// printLogs prints an operation's log: stdout lines to stdout, stderr lines to stderr, as the script wrote
// them (colours and all, as kubectl logs prints them: the script is the admin's own), the worker's own notes
// to stderr marked with '#' and escaped like every other text from the server. prefix goes before each line (deploy uses it for step numbers).
func printLogs(c *cli.Context, cl *client.Client, id string, after int64, follow bool, prefix string) (*api.LogEnd, error) {
	return cl.Logs(c.Context, id, client.LogsOptions{After: after, Follow: follow}, func(l api.LogLine) error {
		switch l.Stream {
		case api.StreamStdout:
			fmt.Fprintf(c.App.Writer, "%s%s\n", prefix, l.Text)
		case api.StreamStderr:
			fmt.Fprintf(c.App.ErrWriter, "%s%s\n", prefix, l.Text)
		default:
			fmt.Fprintf(c.App.ErrWriter, "%s# %s\n", prefix, esc(l.Text)) // the worker's own note, not the script's
		}
		return nil
	})
}

// exitCodeOf maps an operation's end to the process exit code: 0 only for success; a failed operation's own
// exit code when it is one a process can exit with (1..255), else 1. A code outside that range (the server
// refuses them, an older one did not) must not reach os.Exit: 256 would exit 0, a failure reported as success.
func exitCodeOf(end *api.LogEnd) int {
	switch end.State {
	case api.StateSucceeded:
		return 0
	case api.StateTimedOut:
		return 124
	case api.StateCancelled:
		return 130
	}
	if end.ExitCode != nil && *end.ExitCode >= 1 && *end.ExitCode <= 255 {
		return *end.ExitCode
	}
	return 1
}

// endText says how an operation ended: its state, exit code and message.
func endText(end *api.LogEnd) string {
	s := string(end.State)
	if end.ExitCode != nil {
		s += fmt.Sprintf(" (exit code %d)", *end.ExitCode)
	}
	if end.Message != "" {
		s += ": " + end.Message
	}
	return s
}

// endExit reports how the operation ended and returns its exit code (nil for success).
func endExit(c *cli.Context, id string, end *api.LogEnd) error {
	if end == nil {
		return fmt.Errorf("the log of %s ended before the operation did", id)
	}
	summary := escText(fmt.Sprintf("operation %s %s", id, endText(end)))
	code := exitCodeOf(end)
	if code == 0 {
		fmt.Fprintln(c.App.ErrWriter, summary)
		return nil
	}
	return cli.Exit(summary, code)
}

// deployCommand is `octo-worker deploy -f process.yaml`.
func deployCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "deploy",
		Usage: "submit a deployment process (YAML: name, pool, steps); steps run in order and a failed step stops the rest",
		Description: "The file is a DeploymentSpec in YAML (or JSON):\n\n" +
			"  name: release-42\n  pool: web               # default pool of the steps\n  steps:\n" +
			"    - name: migrate\n      pool: db           # a step may name its own pool\n      script: ./migrate.sh\n" +
			"      image: ghcr.io/acme/tools:1.4\n      packages: [migrations@1.4.0]   # unpacked into the work directory\n      variables:\n        - {name: DB_PASSWORD, value: hunter2, sensitive: true}\n" +
			"    - name: deploy\n      script: |\n        helm upgrade --install web ./chart\n      timeout_seconds: 600\n\n" +
			"Unknown fields are refused with their path. With --follow, each step's log is printed as it runs and the\n" +
			"exit code is that of the step that failed (0 when all succeeded).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "process file (- for stdin)", Required: true},
			&cli.BoolFlag{Name: "follow", Usage: "print each step's log as it runs and exit with the deployment's outcome"},
		},
		Action: runDeploy,
	})
}

// loadProcess reads a deployment process file: YAML → JSON, then the server's strict decoder and validation,
// so mistakes are reported with their path before anything is sent.
func loadProcess(file string) (api.DeploymentSpec, error) {
	var spec api.DeploymentSpec
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return spec, cli.Exit("--file: "+err.Error(), 2)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return spec, cli.Exit(fmt.Sprintf("%s: not valid YAML: %v", file, err), 2)
	}
	if err := decode.Bytes(js, &spec); err != nil {
		return spec, cli.Exit(fmt.Sprintf("%s: %v", file, err), 2)
	}
	if err := validate.DeploymentSpec(&spec); err != nil {
		return spec, cli.Exit(fmt.Sprintf("%s: %v", file, err), 2)
	}
	return spec, nil
}

func runDeploy(c *cli.Context) error {
	spec, err := loadProcess(c.String("file"))
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	d, err := cl.Deploy(c.Context, spec)
	if err != nil {
		return err
	}
	if !c.Bool("follow") {
		return output(c, d, func(w io.Writer) { fmt.Fprintln(w, d.ID) })
	}
	fmt.Fprintf(c.App.ErrWriter, "submitted deployment %s (%d steps)\n", esc(d.ID), len(d.Operations))
	return followDeployment(c, cl, d)
}

// followDeployment prints each step's log in turn, then the outcome; the exit code is the failed step's.
func followDeployment(c *cli.Context, cl *client.Client, d api.Deployment) error {
	var failed *api.LogEnd
	n := len(d.Operations)
	for i, op := range d.Operations {
		label := dash(op.Name)
		fmt.Fprintf(c.App.ErrWriter, "== step %d/%d %s (%s)\n", i+1, n, esc(label), esc(op.ID))
		end, err := printLogs(c, cl, op.ID, 0, true, fmt.Sprintf("[%d] ", i+1))
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.ErrWriter, "== step %d/%d %s: %s\n", i+1, n, esc(label), escText(endText(end)))
		if end.State != api.StateSucceeded && failed == nil {
			failed = end
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), 30*time.Second)
	defer cancel()
	final, err := cl.Deployment(ctx, d.ID)
	if err != nil {
		return err
	}
	if failed == nil {
		fmt.Fprintf(c.App.ErrWriter, "deployment %s %s\n", esc(d.ID), esc(string(final.State)))
		return nil
	}
	return cli.Exit(esc(fmt.Sprintf("deployment %s %s", d.ID, final.State)), exitCodeOf(failed))
}

// overridesFromFlags reads --node-selector KEY=VALUE and --toleration KEY[=VALUE][:EFFECT] (no value:
// operator Exists); nil when there are none.
func overridesFromFlags(selectors, tolerations []string) (*api.PodOverrides, error) {
	if len(selectors)+len(tolerations) == 0 {
		return nil, nil
	}
	o := &api.PodOverrides{NodeSelector: map[string]string{}}
	for _, s := range selectors {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, cli.Exit(fmt.Sprintf("--node-selector %q: write KEY=VALUE", s), 2)
		}
		o.NodeSelector[k] = v
	}
	for _, s := range tolerations {
		rest, effect, _ := strings.Cut(s, ":")
		k, v, eq := strings.Cut(rest, "=")
		t := api.Toleration{Key: k, Operator: "Exists", Effect: effect}
		if eq {
			t.Operator, t.Value = "Equal", v
		}
		o.Tolerations = append(o.Tolerations, t)
	}
	return o, nil
}
