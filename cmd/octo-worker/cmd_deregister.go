package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// agentDeregisterCommand is the chart's pre-delete hook: it deregisters the release's worker from the
// dispatch server with the worker's own token, deletes the Jobs (and Secrets) of its operations, then deletes
// the identity Secret, so that `helm uninstall` leaves neither a registered worker nor what the agent created
// (which is the agent's, not the release's, so helm would leave it).
func agentDeregisterCommand() *cli.Command {
	return &cli.Command{
		Name:   "deregister",
		Usage:  "deregister the release's worker from the dispatch server, delete its operations' Jobs and its identity Secret (the chart's pre-delete hook)",
		Hidden: true,
		Description: "Reads the worker's identity Secret, removes the worker from the dispatch server with its own token\n" +
			"(POST /api/v1/worker/deregister: its token stops working, the operations it held become lost), deletes the\n" +
			"Jobs and Secrets of its operations (running scripts stop; --keep-jobs leaves them to finish and to their\n" +
			"TTL), then deletes the identity Secret. Safe to run again: no Secret is nothing to do, and a server that no\n" +
			"longer knows the token (401) or the worker (404) means it was removed already. While the server is\n" +
			"unreachable it retries for --timeout, then fails and keeps the Secret (or, with --allow-unreachable, goes\n" +
			"on without deregistering). Needs get, list and delete on secrets, and list and delete on jobs.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "namespace", EnvVars: []string{"OCTO_NAMESPACE"}, Usage: "namespace of the identity Secret (the release namespace)"},
			&cli.StringFlag{Name: "release", EnvVars: []string{"OCTO_RELEASE_NAME"}, Usage: "the worker's Helm release: the identity Secret is <release>-identity"},
			&cli.StringFlag{Name: "identity-secret", Usage: "the identity Secret's name, when it is not <release>-identity"},
			&cli.StringFlag{Name: "server", EnvVars: []string{"OCTO_SERVER"}, Usage: "dispatch server URL (the chart's worker.serverUrl)"},
			&cli.StringFlag{Name: "ca-cert", EnvVars: []string{"OCTO_CA_CERT"}, Usage: "PEM file of the CA that signed the server's certificate (default: the system's roots, as the agent uses)"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig file; empty: in-cluster configuration"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "how long to keep trying while the dispatch server is unreachable or failing"},
			&cli.BoolFlag{Name: "allow-unreachable", EnvVars: []string{"OCTO_DEREGISTER_ALLOW_UNREACHABLE"},
				Usage: "when the server stays unreachable, delete the identity Secret anyway and succeed (the worker stays registered until `octo-worker workers remove ID`)"},
			&cli.BoolFlag{Name: "keep-jobs", EnvVars: []string{"OCTO_DEREGISTER_KEEP_JOBS"},
				Usage: "leave the Jobs of the worker's operations (their scripts run on unsupervised, their results unknown, until ttlSecondsAfterFinished deletes them)"},
		},
		Action: runDeregister,
	}
}

func runDeregister(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	ns := c.String("namespace")
	if ns == "" {
		return cli.Exit("--namespace (OCTO_NAMESPACE) is required: the namespace of the worker's identity Secret", 2)
	}
	name := c.String("identity-secret")
	if name == "" {
		if c.String("release") == "" {
			return cli.Exit("give --release (OCTO_RELEASE_NAME) or --identity-secret: they name the worker's identity Secret", 2)
		}
		name = jobrunner.IdentitySecretName(c.String("release"))
	}
	if c.Duration("timeout") <= 0 {
		return cli.Exit("--timeout must be positive, e.g. 30s", 2)
	}
	dc, err := client.New(client.Config{Server: c.String("server"), CACertFile: c.String("ca-cert"),
		UserAgent: "octo-worker-deregister/" + c.App.Version, Log: log.WithField("component", "dispatch-client")})
	if err != nil {
		return cli.Exit("--server: "+err.Error(), 2)
	}
	_, kube, err := kubeClient(c.String("kubeconfig"), c.App.Version)
	if err != nil {
		return err
	}
	entry := log.WithFields(logrus.Fields{"component": "deregister", "namespace": ns, "secret": name})
	d := deregistration{client: dc, server: c.String("server"), timeout: c.Duration("timeout"),
		allowUnreachable: c.Bool("allow-unreachable"), log: entry}
	forget := func(ctx context.Context, id jobrunner.Identity) error {
		if err := d.run(ctx, id); err != nil {
			return err
		}
		if c.Bool("keep-jobs") || id.WorkerID == "" {
			return nil
		}
		// After the deregistration: the operations are lost already, so no result is cut short, and the
		// agent, still running, can lease nothing more to start a Job for.
		jobs, secrets, err := jobrunner.DeleteWorkerObjects(ctx, kube, ns, id.WorkerID)
		if err != nil {
			return err
		}
		entry.WithFields(logrus.Fields{"worker": id.WorkerID, "jobs": jobs, "secrets": secrets}).Info("deleted the Jobs and Secrets of the worker's operations")
		return nil
	}
	id, found, err := jobrunner.ForgetIdentity(c.Context, kube, ns, name, forget)
	if err != nil {
		return err
	}
	if !found {
		entry.Info("no identity Secret: nothing to deregister")
	} else {
		entry.WithField("worker", id.WorkerID).Info("identity Secret deleted")
	}
	if release := c.String("release"); release != "" && !c.Bool("keep-jobs") {
		n, err := deleteReleaseRecords(c.Context, kube, ns, release)
		if err != nil {
			return err
		}
		entry.WithField("objects", n).Info("deleted the release's failed values checks and self-update records")
	}
	return nil
}

// deleteReleaseRecords deletes what the release's hooks and self-updates keep for the record and helm does not
// own: failed values-check Jobs and self-update Jobs with their chart ConfigMaps. It returns how many it deleted.
func deleteReleaseRecords(ctx context.Context, kube kubernetes.Interface, ns, release string) (int, error) {
	fg := metav1.DeletePropagationForeground
	n := 0
	selfUpdate := selfupdate.LabelComponent + "=" + selfupdate.ComponentValue + "," + selfupdate.LabelRelease + "=" + release
	for _, sel := range []string{selfUpdate, "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=" + jobrunner.ValuesCheckComponent} {
		jobs, err := kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return n, fmt.Errorf("listing Jobs (%s) in %s: %w", sel, ns, err)
		}
		for _, j := range jobs.Items {
			if err := kube.BatchV1().Jobs(ns).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil && !apierrors.IsNotFound(err) {
				return n, fmt.Errorf("deleting Job %s/%s: %w", ns, j.Name, err)
			}
			n++
		}
	}
	cms, err := kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: selfUpdate})
	if err != nil {
		return n, fmt.Errorf("listing self-update ConfigMaps in %s: %w", ns, err)
	}
	for _, cm := range cms.Items {
		if err := kube.CoreV1().ConfigMaps(ns).Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("deleting ConfigMap %s/%s: %w", ns, cm.Name, err)
		}
		n++
	}
	return n, nil
}

// deregistration removes a worker from the dispatch server with the worker's own token, for the pre-delete
// hook.
type deregistration struct {
	client *client.Client
	server string
	// timeout bounds the retries while the server is unreachable or failing.
	timeout time.Duration
	// allowUnreachable makes a server that stays unreachable a warning instead of a failure.
	allowUnreachable bool
	log              *logrus.Entry
	// firstWait is the first pause between attempts (default 500 ms); it doubles up to 5 s.
	firstWait time.Duration
}

// deregOutcome is what a reply to a deregistration means for the hook.
type deregOutcome int

const (
	deregDone  deregOutcome = iota // the server removed the worker
	deregGone                      // the server no longer knows the token or the worker: removed before
	deregRetry                     // the server is unreachable or failing: try again
	deregFail                      // the server refused: retrying cannot help
)

// classifyDeregister maps the result of a deregistration call to what the hook does next. A 401 is the
// normal answer to a repeat: the first call (an earlier run, or an attempt whose reply was lost) removed the
// worker, and its token stopped working with it. A 404 is the same worker gone by another path.
func classifyDeregister(err error) deregOutcome {
	if err == nil {
		return deregDone
	}
	var e *client.Error
	if !errors.As(err, &e) {
		return deregRetry // no reply: connection refused, reset, timed out, DNS
	}
	switch {
	case e.Status == http.StatusUnauthorized, e.Status == http.StatusNotFound:
		return deregGone
	case e.Status == http.StatusTooManyRequests, e.Status == http.StatusRequestTimeout, e.Status >= 500:
		return deregRetry
	}
	return deregFail
}

// run deregisters the worker of id. It keeps trying for the timeout while the server is unreachable or
// failing; then it fails (the caller keeps the identity Secret, so a re-run can still deregister), unless
// allowUnreachable.
func (d deregistration) run(ctx context.Context, id jobrunner.Identity) error {
	log := d.log.WithField("worker", id.WorkerID)
	if id.WorkerID == "" || id.Token == "" {
		// Nothing can deregister with this Secret; keeping it would only leave it behind.
		log.Warn("the identity Secret lacks the worker id or token, so the worker cannot deregister itself; deleting the Secret. " +
			"If a worker of this release is still listed by `octo-worker workers list`, remove it with `octo-worker workers remove ID`")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	wait := d.firstWait
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	wc := d.client.WithToken(id.Token)
	var last error
	for {
		rm, err := wc.Deregister(ctx)
		switch classifyDeregister(err) {
		case deregDone:
			log.WithFields(logrus.Fields{"name": rm.Worker.Name, "lost": len(rm.Lost), "cancelled": len(rm.Cancelled)}).
				Info("worker deregistered from the dispatch server; the operations it held, if any, ended as lost")
			return nil
		case deregGone:
			log.WithField("reply", err.Error()).Info("the dispatch server no longer knows this worker (removed already, " +
				"by an admin or by an earlier run of this hook): nothing to deregister")
			return nil
		case deregFail:
			return fmt.Errorf("deregistering worker %s: the dispatch server refused: %w; remove the worker by hand with "+
				"`octo-worker workers remove %s`, then run the uninstall again", id.WorkerID, err, id.WorkerID)
		}
		last = err
		if ctx.Err() == nil {
			log.WithError(err).WithField("retry_in", wait).Warn("the dispatch server is unreachable or failing; retrying")
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		if ctx.Err() != nil {
			break // the for loop: out of time (or stopped)
		}
		wait = min(2*wait, 5*time.Second)
	}
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("deregistering worker %s: %w", id.WorkerID, err) // stopped (SIGTERM)
	}
	if d.allowUnreachable {
		log.WithError(last).Warnf("could not reach the dispatch server %s within %s; --allow-unreachable: deleting the identity "+
			"Secret anyway. The worker stays registered (unhealthy, its leases expire as lost): remove it with `octo-worker workers remove %s`",
			d.server, d.timeout, id.WorkerID)
		return nil
	}
	return fmt.Errorf("could not deregister worker %s: the dispatch server %s stayed unreachable for %s (last error: %v). "+
		"When it is back, run the uninstall again; or remove the worker by hand with `octo-worker workers remove %s`, "+
		"then delete the identity Secret and uninstall with `helm uninstall --no-hooks`",
		id.WorkerID, d.server, d.timeout, last, id.WorkerID)
}
