package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Start-up while the Kubernetes API server cannot be reached. A worker that exited then would crash-loop with
// growing delays, and its leases would expire (its operations become lost) while their pods keep running.
// Instead it stays up: it takes its identity from the mounted identity Secret, tries the API server again with
// back-off, and meanwhile heartbeats every lease the dispatch server holds for it, reporting itself unhealthy
// with the reason. Once the API server answers, it starts as usual and re-adopts the Jobs.
const (
	kubeRetryFirst = time.Second
	kubeRetryMax   = 30 * time.Second
)

// KubeUnreachable reports whether err means that the Kubernetes API server could not be reached or could not
// answer (no connection, a timeout, 429, 5xx), as opposed to a refusal that retrying does not change.
func KubeUnreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // no answer from the server at all
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err)
}

// IdentityFromDir reads the identity kept in the identity Secret from the directory where the chart mounts that
// Secret (OCTO_IDENTITY_DIR: optional, read-only), for a start while the API server cannot be reached. ok is
// false when dir is empty or holds no identity (the Secret did not exist when the pod started).
func IdentityFromDir(dir string) (id Identity, ok bool, err error) {
	if dir == "" {
		return Identity{}, false, nil
	}
	read := func(key string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, key))
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return strings.TrimSpace(string(b)), err
	}
	if id.WorkerID, err = read(identityIDKey); err != nil {
		return Identity{}, false, fmt.Errorf("reading the mounted identity (OCTO_IDENTITY_DIR %s): %w", dir, err)
	}
	if id.Token, err = read(identityTokenKey); err != nil {
		return Identity{}, false, fmt.Errorf("reading the mounted identity (OCTO_IDENTITY_DIR %s): %w", dir, err)
	}
	return id, id.WorkerID != "" && id.Token != "", nil
}

// StartIdentity returns the worker's identity at start-up: EnsureIdentity's when the API server answers. While
// it cannot be reached, it returns the identity mounted in dir (IdentityFromDir), and the agent then waits for
// the API server in Run, keeping its leases. Without a mounted identity (a worker that never registered holds no
// leases) it tries the API server again with back-off, 1 s up to 30 s, until ctx ends.
func StartIdentity(ctx context.Context, kube kubernetes.Interface, ns, name, dir string, register func(context.Context) (api.RegisterResponse, error), log logrus.FieldLogger) (Identity, bool, error) {
	backoff := kubeRetryFirst
	for {
		id, created, err := EnsureIdentity(ctx, kube, ns, name, register)
		if !KubeUnreachable(err) || ctx.Err() != nil {
			return id, created, err
		}
		mounted, ok, derr := IdentityFromDir(dir)
		if derr != nil {
			log.WithError(derr).Warn("cannot read the mounted identity Secret")
		}
		if ok {
			log.WithError(err).WithField("worker", mounted.WorkerID).Warn("the Kubernetes API server cannot be reached: starting with the mounted identity")
			return mounted, false, nil
		}
		log.WithError(err).WithField("retry_in", backoff).Warn("the Kubernetes API server cannot be reached and no identity is mounted (OCTO_IDENTITY_DIR); retrying")
		if !backOff(ctx, &backoff, kubeRetryMax) {
			return Identity{}, false, fmt.Errorf("%w (stopped while retrying)", err)
		}
	}
}

// waitForKube returns once the API server answers (true), or when ctx ends (false). Until then it retries with
// back-off, 1 s up to 30 s, reports the agent unhealthy with the reason, and heartbeats every lease the dispatch
// server holds for this worker, so that none expires while the Jobs keep running.
func (a *Agent) waitForKube(ctx context.Context) bool {
	err := a.probeKube(ctx)
	if !KubeUnreachable(err) {
		return ctx.Err() == nil
	}
	a.log.WithError(err).Warn("the Kubernetes API server cannot be reached: keeping this worker's leases until it can")
	a.setKubeWait(err)
	defer a.setKubeWait(nil)

	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); a.keepLeases(hbCtx) }()
	defer func() { stopHB(); <-hbDone }()

	backoff := kubeRetryFirst
	for {
		if !backOff(ctx, &backoff, kubeRetryMax) {
			return false
		}
		err := a.probeKube(ctx)
		if !KubeUnreachable(err) {
			a.log.Info("the Kubernetes API server answers: starting")
			return ctx.Err() == nil
		}
		a.log.WithError(err).WithField("retry_in", backoff).Warn("the Kubernetes API server still cannot be reached")
		a.setKubeWait(err)
	}
}

// probeKube asks the API server for what the informer lists first: this worker's Jobs.
func (a *Agent) probeKube(ctx context.Context) error {
	_, err := a.kube.BatchV1().Jobs(a.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: a.Selector().String(), Limit: 1})
	return err
}

// setKubeWait records why the agent waits for the API server (nil: it does not), which Health reports.
func (a *Agent) setKubeWait(err error) {
	if err == nil {
		a.kubeWait.Store(nil)
		return
	}
	msg := "waiting for the Kubernetes API server: " + err.Error()
	a.kubeWait.Store(&msg)
}

// keepLeases heartbeats every lease the server holds for this worker until ctx ends, at the heartbeat interval
// (or the server's, when shorter), with the agent's health.
func (a *Agent) keepLeases(ctx context.Context) {
	interval := a.cfg.HeartbeatInterval
	for {
		n, resp, err := heartbeatLeases(ctx, a.d, api.HeartbeatRequest{
			Version: a.cfg.Version, Capacity: a.cfg.Concurrency, Capabilities: a.cfg.Capabilities,
		}, func(int) api.Health { return a.Health() })
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.WithError(err).Warn("heartbeating this worker's leases failed")
		case err == nil:
			a.log.WithField("leases", n).Debug("renewed this worker's leases while waiting for the Kubernetes API server")
			if s := time.Duration(resp.HeartbeatSeconds) * time.Second; s > 0 && s < a.cfg.HeartbeatInterval {
				interval = s
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// heartbeatLeases sends one heartbeat req that lists every lease the server holds for the worker (so that the
// server renews them all), with the health that health gives for that many leases (its message capped to the
// server's limit), and returns how many it listed.
func heartbeatLeases(ctx context.Context, d leaseRenewer, req api.HeartbeatRequest, health func(leases int) api.Health) (int, api.HeartbeatResponse, error) {
	leases, err := d.Leases(ctx)
	if err != nil {
		return 0, api.HeartbeatResponse{}, fmt.Errorf("listing the worker's leases: %w", err)
	}
	req.Running = make([]string, 0, len(leases))
	for _, l := range leases {
		req.Running = append(req.Running, l.Operation.ID)
	}
	req.Health = health(len(req.Running))
	req.Health.Message = capMessage(req.Health.Message, api.MaxMessageLen)
	resp, err := d.Heartbeat(ctx, req)
	if err != nil {
		return 0, resp, fmt.Errorf("heartbeating for the worker: %w", err)
	}
	return len(req.Running), resp, nil
}

// untilReachable calls f until it succeeds, fails for another reason than an unreachable Kubernetes API server
// (KubeUnreachable), or ctx ends. While the API server cannot be reached (it restarts, say) the operation's log
// says so once, and f is tried again with back-off, 1 s up to 30 s: the operation waits instead of failing.
func (o *operation) untilReachable(ctx context.Context, what string, f func() error) error {
	backoff := kubeRetryFirst
	for said := false; ; said = true {
		err := f()
		if !KubeUnreachable(err) || ctx.Err() != nil {
			return err
		}
		if !said {
			o.say(ctx, "waiting for the Kubernetes API server to %s: %v", what, err)
		}
		o.log.WithError(err).Warnf("the Kubernetes API server cannot be reached to %s; trying again in %s", what, backoff)
		if !backOff(ctx, &backoff, kubeRetryMax) {
			return err
		}
	}
}
