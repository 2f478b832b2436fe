package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/octo-worker/octo-worker/chartgen"
)

// installCommand is `octo-worker install`: print the helm command that installs a worker, or install it.
func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "print the helm command that installs a worker in a cluster (or, with --apply, install it)",
		Description: "Validates the values first (the same checks as chartgen validate). Without --apply it prints one\n" +
			"`helm upgrade --install` command line, shell-quoted, to paste. With --apply it installs or upgrades the\n" +
			"release itself through the Helm SDK with the chart embedded in this binary.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server-url", Usage: "dispatch server URL (worker.serverUrl)"},
			&cli.StringFlag{Name: "registration-token", EnvVars: []string{"OCTO_REGISTRATION_TOKEN"}, Usage: "registration token (worker.registrationToken)"},
			&cli.StringSliceFlag{Name: "pool", Usage: "worker pool (repeatable; worker.pools)"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "octo-worker", Usage: "release namespace"},
			&cli.StringFlag{Name: "release", Value: "octo-worker", Usage: "Helm release name"},
			&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "values file (repeatable)"},
			&cli.StringSliceFlag{Name: "set", Usage: "set a value, key=value (repeatable)"},
			&cli.StringFlag{Name: "chart", Value: chartgen.DefaultChartLocation, Usage: "chart reference in the printed command (repo/name, oci:// URL, directory or .tgz); with --apply, a local directory or .tgz replaces the embedded chart"},
			&cli.StringFlag{Name: "chart-version", Usage: "chart version in the printed command (default: the embedded chart's version)"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the worker is ready"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long --wait waits"},
			&cli.BoolFlag{Name: "apply", Usage: "install through the Helm SDK instead of printing the command"},
			&cli.BoolFlag{Name: "atomic", Usage: "with --apply: roll back a failed upgrade (implies --wait)"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig for --apply (default: the usual locations)"},
			&cli.StringFlag{Name: "context", Usage: "kubeconfig context for --apply"},
		},
		Action: runInstall,
	}
}

func runInstall(c *cli.Context) error {
	embedded, err := chartgen.EmbeddedChart()
	if err != nil {
		return err
	}
	cmd := chartgen.InstallCommand{
		Release:           c.String("release"),
		Namespace:         c.String("namespace"),
		Chart:             c.String("chart"),
		ChartVersion:      c.String("chart-version"),
		ServerURL:         c.String("server-url"),
		RegistrationToken: c.String("registration-token"),
		Pools:             c.StringSlice("pool"),
		Files:             c.StringSlice("values"),
		Sets:              c.StringSlice("set"),
		Wait:              c.Bool("wait"),
		Timeout:           c.Duration("timeout"),
	}
	if cmd.ChartVersion == "" && cmd.Chart == chartgen.DefaultChartLocation {
		cmd.ChartVersion = embedded.Metadata.Version
	}
	v, err := cmd.Validate()
	var pe *chartgen.ProblemsError
	if errors.As(err, &pe) {
		for _, p := range pe.Problems {
			if p.File == "" {
				p.File = "(defaults)"
			}
			fmt.Fprintln(c.App.ErrWriter, p.String())
		}
		return cli.Exit(fmt.Sprintf("%d problem(s) in the values: nothing installed", len(pe.Problems)), 1)
	}
	if err != nil {
		return err
	}
	if !c.Bool("apply") {
		fmt.Fprintln(c.App.Writer, cmd.String())
		return nil
	}

	ch := embedded
	if _, err := os.Stat(cmd.Chart); err == nil {
		if ch, err = chartgen.LoadChart(cmd.Chart); err != nil {
			return err
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.String("kubeconfig")
	restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.String("context")}).ClientConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	hc, err := chartgen.HelmConfig(restCfg, cmd.Namespace, log.WithField("component", "install"))
	if err != nil {
		return err
	}
	rel, err := chartgen.Apply(c.Context, hc, ch, v, chartgen.ApplyOptions{
		Release: cmd.Release, Namespace: cmd.Namespace, CreateNamespace: true,
		Wait: cmd.Wait, Atomic: c.Bool("atomic"), Timeout: cmd.Timeout,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "release %s in namespace %s: revision %d, %s (chart %s)\n\n%s\n",
		rel.Name, rel.Namespace, rel.Version, rel.Info.Status, rel.Chart.Metadata.Version, rel.Info.Notes)
	return nil
}
