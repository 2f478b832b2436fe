package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// agentCommand runs the worker agent: octo-worker agent --values /etc/octo-worker/values.yaml.
func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the worker: lease operations from the dispatch server and run each as a Kubernetes Job",
		Description: "Configuration: chart defaults < --values files (in order) < --set < environment < flags.\n" +
			"In the cluster the chart mounts the effective values and the identity Secret, and sets OCTO_REGISTRATION_TOKEN,\n" +
			"OCTO_NAMESPACE, OCTO_POD_NAME, OCTO_RELEASE_NAME and OCTO_IDENTITY_DIR. Outside it, give --kubeconfig and --namespace.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "values file (the chart's format); repeatable"},
			&cli.StringSliceFlag{Name: "set", Usage: "override a value, Helm syntax (worker.concurrency=20); repeatable"},
			&cli.StringFlag{Name: "server", EnvVars: []string{"OCTO_SERVER"}, Usage: "dispatch server URL (overrides worker.serverUrl)"},
			&cli.StringFlag{Name: "registration-token", EnvVars: []string{"OCTO_REGISTRATION_TOKEN"}, Usage: "pool-scoped registration token (needed on first start only)"},
			&cli.StringFlag{Name: "namespace", EnvVars: []string{"OCTO_NAMESPACE"}, Usage: "namespace of the worker's Jobs (the release namespace)"},
			&cli.StringFlag{Name: "release", EnvVars: []string{"OCTO_RELEASE_NAME"}, Usage: "the worker's Helm release (names the identity Secret; default worker name)"},
			&cli.StringFlag{Name: "pod-name", EnvVars: []string{"OCTO_POD_NAME"}, Usage: "the worker's own pod"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig file; empty: in-cluster configuration"},
			&cli.StringFlag{Name: "identity-dir", EnvVars: []string{"OCTO_IDENTITY_DIR"},
				Usage: "the identity Secret mounted as files (the chart mounts it): the worker starts with it while the Kubernetes API server cannot be reached"},
			&cli.StringFlag{Name: "health-listen", Value: ":8081", EnvVars: []string{"OCTO_HEALTH_LISTEN"}, Usage: "address of /healthz and /readyz"},
			&cli.IntFlag{Name: "concurrency", Usage: "operations run at once (overrides worker.concurrency)"},
			&cli.BoolFlag{Name: "release-startup-pages", Value: true, EnvVars: []string{"OCTO_RELEASE_STARTUP_PAGES"},
				Usage: "once ready, give back the binary's pages that only start-up used (Linux MADV_PAGEOUT; about 40 MiB of RSS)"},
			&cli.DurationFlag{Name: "sweep-interval", Hidden: true, Usage: "how often orphaned Jobs and Secrets are looked for (tests)"},
		},
		Action:      runAgent,
		Subcommands: []*cli.Command{agentDeregisterCommand()},
	}
}

// loadAgentValues reads and validates the values like `chartgen validate`, except that the registration
// token is not required there: the agent gets it from OCTO_REGISTRATION_TOKEN (the chart maps the Secret to
// it), and needs none once its identity Secret exists.
func loadAgentValues(files, sets []string) (chartgen.Values, error) {
	in, err := chartgen.ReadFiles(files)
	if err != nil {
		return chartgen.Values{}, err
	}
	// A stand-in satisfies the schema's "a token or its Secret"; the token rules' problems are dropped below.
	in.Set = sets
	in.SetLiteral = []string{"worker.registrationToken=from-the-environment"}
	l, err := in.Load()
	if err != nil {
		return l.Values, err
	}
	v := l.Values
	var problems []chartgen.Problem
	for _, p := range v.Validate() {
		if p.Path == "worker.registrationToken" || strings.HasPrefix(p.Path, "worker.registrationTokenSecret") {
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return v, &chartgen.ProblemsError{Problems: problems}
	}
	return v, nil
}

// agentConfig builds the jobrunner configuration from the chart's values, where the agent runs, and the flags
// that override values (--concurrency; --sweep-interval for tests).
func agentConfig(c *cli.Context, v chartgen.Values) (jobrunner.Config, error) {
	cfg, err := jobrunner.ConfigFrom(v, jobrunner.Env{
		Namespace: c.String("namespace"), Release: c.String("release"), PodName: c.String("pod-name"), Version: c.App.Version,
	})
	if err != nil {
		return cfg, err
	}
	if c.IsSet("concurrency") {
		cfg.Concurrency = c.Int("concurrency")
	}
	if c.IsSet("sweep-interval") {
		cfg.SweepInterval = c.Duration("sweep-interval")
	}
	return cfg, cfg.Validate()
}

func kubeConfig(path, version string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if path == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
	} else if rc, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	// Each running operation makes a few writes and holds one log stream; the default 5 QPS would throttle
	// a worker running hundreds at once.
	rc.QPS, rc.Burst = 100, 200
	rc.UserAgent = "octo-worker/" + version
	return rc, nil
}

// kubeClient is kubeConfig and a clientset for it; errors are exit errors that name the flag.
func kubeClient(path, version string) (*rest.Config, *kubernetes.Clientset, error) {
	rc, err := kubeConfig(path, version)
	if err != nil {
		return nil, nil, cli.Exit(err.Error(), 2)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	return rc, kube, nil
}

func runAgent(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	values, err := loadAgentValues(c.StringSlice("values"), c.StringSlice("set"))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	cfg, err := agentConfig(c, values)
	if err != nil {
		return cli.Exit("invalid worker configuration:\n"+err.Error(), 2)
	}
	server := values.Worker.ServerURL
	if c.IsSet("server") {
		server = c.String("server")
	}
	jobrunner.RegisterKubeMetrics()
	_, kube, err := kubeClient(c.String("kubeconfig"), c.App.Version)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.String("health-listen"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("--health-listen: %v", err), 2)
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	dc, err := client.New(client.Config{Server: server, Token: c.String("registration-token"), UserAgent: "octo-worker-agent/" + c.App.Version,
		Log: log.WithField("component", "dispatch-client")})
	if err != nil {
		ln.Close()
		return cli.Exit("worker.serverUrl: "+err.Error(), 2)
	}
	var register func(context.Context) (api.RegisterResponse, error)
	if c.String("registration-token") != "" {
		register = func(ctx context.Context) (api.RegisterResponse, error) {
			return dc.Register(ctx, api.RegisterRequest{
				Name: cfg.WorkerName, Pools: cfg.Pools, Version: cfg.Version, Capabilities: cfg.Capabilities, Capacity: cfg.Concurrency,
				Profiles: cfg.ProfileNames(), AllowOverrides: cfg.AllowOverrides,
			})
		}
	}
	id, created, err := jobrunner.StartIdentity(ctx, kube, cfg.Namespace, cfg.IdentitySecret, c.String("identity-dir"), register,
		log.WithField("component", "agent"))
	if err != nil {
		ln.Close()
		return err
	}
	log.WithFields(logrus.Fields{"component": "agent", "worker": id.WorkerID, "registered": created}).Info("worker identity")
	d := dc.WithToken(id.Token).WithLogLimit(cfg.LogLimit)
	deps := jobrunner.Deps{Kube: kube, Dispatcher: d, WorkerID: id.WorkerID, Log: log,
		FetchChart: d.DownloadChart}
	if c.Bool("release-startup-pages") {
		deps.OnReady = func() {
			n, err := releaseStartupPages()
			log.WithFields(logrus.Fields{"component": "agent", "mapped_bytes": n}).WithError(err).Debug("released start-up pages of the binary")
		}
	}
	if values.SelfUpdate.Enabled && c.String("release") != "" && c.String("kubeconfig") == "" {
		// Only in the cluster, as a Helm release: the upgrade Job runs with the worker's own account and image.
		var pullSecrets []corev1.LocalObjectReference
		for _, s := range values.ImagePullSecrets {
			pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: s.Name})
		}
		deps.Updater = &selfupdate.Updater{
			Kube: kube, Namespace: cfg.Namespace, Release: c.String("release"), Image: cfg.WorkerImage,
			ServiceAccount: values.ServiceAccount.Name, FromVersion: c.App.Version, Timeout: values.SelfUpdate.Timeout.D(),
			ImagePullSecrets: pullSecrets, Log: log.WithField("component", "selfupdate"),
			Worker: &selfupdate.WorkerLink{Server: server, IdentitySecret: cfg.IdentitySecret, Capabilities: cfg.Capabilities},
		}
		switch out, err := selfupdate.LastOutcome(ctx, kube, cfg.Namespace, c.String("release")); {
		case err != nil:
			log.WithError(err).WithField("component", "selfupdate").Warn("cannot read the last self-update's outcome")
		case out != nil:
			log.WithFields(logrus.Fields{"component": "selfupdate", "version": out.Version, "from": out.FromVersion, "state": out.State, "message": out.Message}).Info("last self-update")
		}
	}
	agent, err := jobrunner.New(cfg, deps)
	if err != nil {
		ln.Close()
		return cli.Exit(err.Error(), 2)
	}
	// Two runnables, both stopped by SIGTERM: the health server, and the agent (which runs its own: heartbeat,
	// health checks, lease loop, sweeper).
	health := jobrunner.NewHealthServer(ln, agent)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := health.Start(ctx); err != nil {
			log.WithError(err).Error("health server stopped")
		}
	}()
	err = agent.Run(ctx)
	stop()
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
