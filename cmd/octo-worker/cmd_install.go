package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
	"helm.sh/helm/v3/pkg/chart"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/octo-worker/octo-worker/chartgen"
)

// installCommand is `octo-worker install`: print the helm command that installs a worker, or install it.
func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "print the helm command that installs a worker in a cluster (or, with --apply, install it)",
		Description: "Validates the values first (the same checks as chartgen validate). Without --apply it writes the\n" +
			"embedded chart as octo-worker-<version>.tgz and a values file with the server, pools and registration\n" +
			"token (mode 0600) into --output-dir, and prints one `helm upgrade --install` command line that uses them,\n" +
			"shell-quoted, to run as printed. --chart names a chart reference (repo/name, oci://) to use instead of the\n" +
			"archive. With --apply it installs or upgrades the release itself through the Helm SDK.",
		Flags: append(valueFlags(),
			&cli.StringFlag{Name: "server-url", Usage: "dispatch server URL (worker.serverUrl)"},
			&cli.StringFlag{Name: "registration-token", EnvVars: []string{"OCTO_REGISTRATION_TOKEN"}, Usage: "registration token, written into the values file (worker.registrationToken)"},
			&cli.StringFlag{Name: "registration-token-secret", Usage: "instead: an existing Secret in the namespace whose key \"token\" holds the registration token"},
			&cli.StringSliceFlag{Name: "pool", Usage: "worker pool (repeatable; worker.pools)"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "octo-worker", Usage: "release namespace"},
			&cli.StringFlag{Name: "release", Value: "octo-worker", Usage: "Helm release name"},
			&cli.StringFlag{Name: "output-dir", Value: ".", Usage: "where the chart archive and the values file are written"},
			&cli.StringFlag{Name: "chart", Usage: "a chart reference for the printed command (repo/name or oci:// URL) instead of the written archive; with --apply, a local directory or .tgz replaces the embedded chart"},
			&cli.StringFlag{Name: "chart-version", Usage: "--version for --chart"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the worker is ready"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long --wait waits"},
			&cli.BoolFlag{Name: "apply", Usage: "install through the Helm SDK instead of printing the command"},
			&cli.BoolFlag{Name: "atomic", Usage: "with --apply: roll back a failed upgrade (implies --wait)"},
			&cli.StringFlag{Name: "pod-security", Value: "restricted", Usage: "with --apply: the Pod Security level enforced in a namespace it creates (restricted, baseline, privileged, or none)"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig for --apply (default: the usual locations)"},
			&cli.StringFlag{Name: "context", Usage: "kubeconfig context for --apply"},
		),
		Action: runInstall,
	}
}

func runInstall(c *cli.Context) error {
	embedded, err := chartgen.EmbeddedChart()
	if err != nil {
		return err
	}
	user, err := valueInput(c)
	if err != nil {
		return err
	}
	cmd := chartgen.InstallCommand{
		Release:           c.String("release"),
		Namespace:         c.String("namespace"),
		Chart:             c.String("chart"),
		ChartVersion:      c.String("chart-version"),
		Dir:               c.String("output-dir"),
		ServerURL:         c.String("server-url"),
		RegistrationToken: c.String("registration-token"),
		TokenSecret:       c.String("registration-token-secret"),
		Pools:             c.StringSlice("pool"),
		User:              user,
		Wait:              c.Bool("wait"),
		Timeout:           c.Duration("timeout"),
	}
	level := c.String("pod-security")
	switch level {
	case "restricted", "baseline", "privileged", "none":
	default:
		return cli.Exit("--pod-security: use restricted, baseline, privileged or none", 2)
	}
	loaded, err := cmd.Check()
	if err != nil {
		return printProblems(c, err, ": nothing installed")
	}
	if !c.Bool("apply") {
		return printInstall(c, cmd, embedded)
	}

	ch := embedded
	if cmd.Chart != "" {
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
	if err := ensureNamespace(c.Context, restCfg, cmd.Namespace, level); err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	hc, err := chartgen.HelmConfig(restCfg, cmd.Namespace, log.WithField("component", "install"))
	if err != nil {
		return err
	}
	rel, err := chartgen.Apply(c.Context, hc, ch, loaded.User, chartgen.ApplyOptions{
		Release: cmd.Release, Namespace: cmd.Namespace,
		Wait: cmd.Wait, Atomic: c.Bool("atomic"), Timeout: cmd.Timeout,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "release %s in namespace %s: revision %d, %s (chart %s)\n\n%s\n",
		rel.Name, rel.Namespace, rel.Version, rel.Info.Status, rel.Chart.Metadata.Version, rel.Info.Notes)
	return nil
}

// printInstall writes the chart archive and the values file, prints the helm command on stdout (alone, so
// `$(octo-worker install ...)` or a copy and paste runs it) and what it wrote on stderr.
func printInstall(c *cli.Context, cmd chartgen.InstallCommand, embedded *chart.Chart) error {
	wrote, err := cmd.Write(func(dir string) (string, error) { return chartgen.Package(embedded, "", "", dir) })
	if err != nil {
		return err
	}
	for _, p := range wrote {
		fmt.Fprintln(c.App.ErrWriter, "wrote", p)
	}
	if cmd.RegistrationToken != "" {
		fmt.Fprintf(c.App.ErrWriter, "the registration token is in %s (mode 0600): delete it once the worker is installed; upgrades keep it with --reuse-values\n", cmd.ValuesFile())
	}
	fmt.Fprintf(c.App.ErrWriter, "to enforce Pod Security 'restricted' (the worker and its script pods pass it): kubectl label namespace %s pod-security.kubernetes.io/enforce=restricted (after the install creates it)\n", cmd.Namespace)
	fmt.Fprintln(c.App.Writer, cmd.String(embedded.Metadata.Version))
	return nil
}

// ensureNamespace creates the release namespace when it is missing, labelled to enforce a Pod Security level
// ("none": no label). An existing namespace is left as it is.
func ensureNamespace(ctx context.Context, cfg *rest.Config, name, level string) error {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if level != "none" {
		ns.Labels = map[string]string{"pod-security.kubernetes.io/enforce": level}
	}
	_, err = kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}
