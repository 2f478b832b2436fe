package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
)

// chartgenCommand is `octo-worker chartgen`: the chart's generator and guard.
func chartgenCommand() *cli.Command {
	return &cli.Command{
		Name:  "chartgen",
		Usage: "render, validate and generate the octo-worker Helm chart",
		Subcommands: []*cli.Command{
			{
				Name:      "validate",
				Usage:     "check values files against the schema and the semantic rules (exit 1 and one line per problem)",
				ArgsUsage: " ",
				Flags: append(valueFlags(),
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"},
					// The chart's pre-install/pre-upgrade hook passes the release's values in an environment variable.
					&cli.StringFlag{Name: "values-from-env", Hidden: true, Usage: "also read a values document from this environment variable"}),
				Action: runValidate,
			},
			{
				Name:  "render",
				Usage: "print the chart's manifests for the given values (Helm SDK, no cluster needed; what helm template prints)",
				Flags: append(valueFlags(),
					&cli.StringFlag{Name: "release", Value: "octo-worker", Usage: "release name"},
					&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "octo-worker", Usage: "release namespace"},
					&cli.StringFlag{Name: "chart", Usage: "chart directory or .tgz (default: the chart embedded in this binary)"},
					&cli.BoolFlag{Name: "notes", Usage: "print NOTES.txt after the manifests"}),
				Action: func(c *cli.Context) error {
					in, err := valueInput(c)
					if err != nil {
						return err
					}
					l, err := in.Check()
					if err != nil {
						return printProblems(c, err, ": nothing rendered")
					}
					ch, err := chartgen.LoadChart(c.String("chart"))
					if err != nil {
						return err
					}
					r, err := chartgen.Render(c.Context, ch, chartgen.RenderOptions{Release: c.String("release"), Namespace: c.String("namespace")}, l.User)
					if err != nil {
						return err
					}
					fmt.Fprint(c.App.Writer, r.Manifest)
					if c.Bool("notes") {
						fmt.Fprintln(c.App.Writer, "---\n# NOTES.txt\n"+commentOut(r.Notes))
					}
					return nil
				},
			},
			{
				Name:  "schema",
				Usage: "print the values JSON schema",
				Action: func(c *cli.Context) error {
					_, err := c.App.Writer.Write(chartgen.SchemaJSON())
					return err
				},
			},
			{
				Name:  "generate",
				Usage: "regenerate values.yaml, values.schema.json and the README values table from chartgen.Values",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "chart", Value: "charts/octo-worker", Usage: "chart directory"},
					&cli.BoolFlag{Name: "check", Usage: "change nothing; exit 1 when a generated file is out of date"},
				},
				Action: func(c *cli.Context) error {
					if c.Bool("check") {
						stale, err := chartgen.Drift(c.String("chart"))
						if err != nil {
							return err
						}
						if len(stale) > 0 {
							return cli.Exit(fmt.Sprintf("out of date (run make generate): %v", stale), 1)
						}
						return nil
					}
					changed, err := chartgen.Generate(c.String("chart"))
					for _, p := range changed {
						fmt.Fprintln(c.App.Writer, "wrote", p)
					}
					return err
				},
			},
			{
				Name:   "self-update",
				Usage:  "upgrade the worker's own release (run by the self-update Job inside the cluster)",
				Hidden: true,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "namespace", EnvVars: []string{"OCTO_NAMESPACE"}, Required: true},
					&cli.StringFlag{Name: "release", EnvVars: []string{"OCTO_RELEASE_NAME"}, Required: true},
					&cli.StringFlag{Name: "configmap", Required: true, Usage: "ConfigMap holding the chart archive"},
					&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute},
					&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "default: in-cluster"},
				},
				Action: runSelfUpdate,
			},
			{
				Name:  "package",
				Usage: "write the embedded chart as a .tgz (what the dispatch server serves for self-update)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "version", Usage: "chart version (default: the chart's)"},
					&cli.StringFlag{Name: "app-version", Usage: "appVersion, the default image tag (default: the chart's)"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: ".", Usage: "directory to write into"},
				},
				Action: func(c *cli.Context) error {
					ch, err := chartgen.EmbeddedChart()
					if err != nil {
						return err
					}
					p, err := chartgen.Package(ch, c.String("version"), c.String("app-version"), c.String("output"))
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, p)
					return nil
				},
			},
		},
	}
}

// ReleaseValuesSource names the values the chart's hook passes in --values-from-env, in problems.
const releaseValuesSource = "release values"

// runValidate prints one line per problem (or a JSON report) and exits 1 when there are any.
func runValidate(c *cli.Context) error {
	output := c.String("output")
	if output != "text" && output != "json" {
		return cli.Exit("--output: use text or json", 2)
	}
	in, err := valueInput(c)
	if err != nil {
		return err
	}
	if env := c.String("values-from-env"); env != "" {
		data, ok := os.LookupEnv(env)
		if !ok {
			return cli.Exit("--values-from-env: "+env+" is not set", 2)
		}
		in.Files = append(in.Files, chartgen.Source{Name: releaseValuesSource, Data: []byte(data)})
	}
	_, err = in.Check()
	var pe *chartgen.ProblemsError
	if err != nil && !errors.As(err, &pe) {
		return err
	}
	var problems []chartgen.Problem
	if pe != nil {
		problems = pe.Problems
	}
	if output == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if problems == nil {
			problems = []chartgen.Problem{}
		}
		if err := enc.Encode(struct {
			Valid    bool               `json:"valid"`
			Files    []string           `json:"files"`
			Problems []chartgen.Problem `json:"problems"`
		}{len(problems) == 0, nonNil(c.StringSlice("values")), problems}); err != nil {
			return err
		}
	} else {
		for _, p := range problems {
			if p.File == "" {
				p.File = "(defaults)"
			}
			fmt.Fprintln(c.App.Writer, p.String())
		}
		if len(problems) == 0 {
			fmt.Fprintln(c.App.ErrWriter, "valid")
		}
	}
	if len(problems) > 0 {
		return cli.Exit(fmt.Sprintf("%d problem(s) in the values", len(problems)), 1)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func commentOut(s string) string {
	return "# " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n# ") + "\n"
}

// runSelfUpdate is the self-update Job's entry point. Its error becomes the container's termination message,
// which the next worker reports.
func runSelfUpdate(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.String("kubeconfig")
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("loading cluster credentials: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	entry := log.WithField("component", "self-update")
	hc, err := chartgen.HelmConfig(cfg, c.String("namespace"), entry)
	if err != nil {
		return err
	}
	err = selfupdate.Run(c.Context, hc, kube, selfupdate.RunOptions{
		Namespace: c.String("namespace"), Release: c.String("release"),
		ConfigMap: c.String("configmap"), Timeout: c.Duration("timeout"),
	}, entry)
	if err != nil {
		// The kubelet reads /dev/termination-log; the next worker reports it.
		_ = os.WriteFile("/dev/termination-log", []byte(err.Error()), 0o644)
	}
	return err
}
