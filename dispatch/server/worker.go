package server

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

func (s *Server) register(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.RegisterRequest
	if err := body(r, &req, validate.Register); err != nil {
		return err
	}
	pools := req.Pools
	if len(pools) == 0 {
		pools = c.token.Pools
	}
	for i, p := range pools {
		if !slices.Contains(c.token.Pools, p) {
			return errf(http.StatusForbidden, fmt.Sprintf("pools[%d]", i), "",
				"registration token %s is scoped to pools %v: it cannot register into %q; create a token for that pool", c.token.ID, c.token.Pools, p)
		}
	}
	now := time.Now().UTC()
	secret := newToken(prefixWorker)
	wk := store.Worker{Worker: api.Worker{ID: newID("wkr-"), Name: req.Name, Pools: pools, Version: req.Version,
		Capabilities: req.Capabilities, Capacity: req.Capacity, Healthy: true, RegisteredAt: now, LastHeartbeat: now,
		Profiles: req.Profiles, AllowOverrides: req.AllowOverrides},
		TokenHash: hashToken(secret), TokenID: c.token.ID}
	if wk.Capabilities == nil {
		wk.Capabilities = []string{}
	}
	if err := s.st.CreateWorker(r.Context(), wk); err != nil {
		return err
	}
	s.log.WithField("worker", wk.ID).WithField("name", wk.Name).WithField("pools", pools).Info("worker registered")
	writeJSON(w, http.StatusCreated, api.RegisterResponse{WorkerID: wk.ID, WorkerToken: secret, Pools: pools,
		HeartbeatSeconds: int(s.cfg.HeartbeatInterval / time.Second), LeaseTTLSeconds: int(s.cfg.LeaseTTL / time.Second)})
	return nil
}

// lease long-polls for one operation. The waiter registers before the first claim attempt, so an operation
// queued at any moment of the poll reaches it without waiting for the poll interval: either a submit hands
// it over directly (the operation is inserted already leased to this worker) or a wake-up makes this poll
// claim it.
func (s *Server) lease(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.LeaseRequest
	if err := body(r, &req, validate.Lease); err != nil {
		return err
	}
	wk := c.worker
	if wk.DrainRequested { // perhaps resumed through another server since it was cached: hold only if so
		w, err := s.readWorker(r.Context(), c.tokenHash)
		if errors.Is(err, store.ErrNotFound) {
			return errf(http.StatusUnauthorized, "", "", "invalid worker token: worker %s was removed; register again with a registration token", wk.ID)
		}
		if err != nil {
			return err
		}
		wk = &w
	}
	ctx, endPoll, err := s.trackPoll(r.Context(), wk.ID)
	if err != nil {
		return err
	}
	defer endPoll()
	deadline := time.NewTimer(time.Duration(req.WaitSeconds) * time.Second)
	defer deadline.Stop()
	if wk.DrainRequested {
		// Hold the poll, so a draining worker that keeps asking does not spin.
		select {
		case <-deadline.C:
		case <-ctx.Done():
		}
		if removedWhileWaiting(ctx) {
			return errRemovedWhileWaiting
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// The pod token and sealing key of whatever this poll leases (pod.go): minted once per poll, so a hand-off
	// and a claim carry the same ones.
	podToken, podHash, sealingKey := newPodCredentials()
	params := store.ClaimParams{WorkerID: wk.ID, Pools: wk.Pools, Capabilities: wk.Capabilities, RequestID: req.RequestID,
		LeaseID: newID("lease-"), PodTokenHash: podHash, SealingKey: sealingKey, LogLimit: cmp.Or(req.LogLimit, api.DefaultLogLimit),
		Profiles: wk.Profiles}
	// The waiter offers the same claim for a direct hand-off (see enqueue): one lease, whichever path grants it.
	var waiter *wake.Waiter[store.ClaimParams, *api.Lease]
	if req.WaitSeconds > 0 {
		waiter = s.queue.WaitFor(store.Offer{Pools: params.Pools, Capabilities: params.Capabilities, Profiles: params.Profiles},
			params, ctx.Done())
	}
	l, err := s.waitForLease(ctx, waiter, params, deadline.C)
	if removedWhileWaiting(ctx) {
		// A lease granted before the removal was ended by it (the operation is lost): not handed out.
		return errRemovedWhileWaiting
	}
	if err != nil {
		return err
	}
	if l == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	// Remember the masker (empty or not): every log append and result of the operation needs it.
	s.rememberMasker(l.Operation.ID, mask.New(sensitive(l.Operation.Variables)))
	l.PodToken = podToken
	s.metrics.leased(l, time.Now())
	writeJSON(w, http.StatusOK, l)
	return nil
}

// errWorkerRemoved is the cause that ends the lease long-polls of a worker being removed.
var errWorkerRemoved = errors.New("worker removed")

// errRemovedWhileWaiting answers a long-poll whose worker was removed while it waited.
var errRemovedWhileWaiting = errf(http.StatusUnauthorized, "", "",
	"this worker was removed while it waited for an operation: its token no longer works; register again with a registration token to take operations")

func removedWhileWaiting(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errWorkerRemoved)
}

// poll is one lease long-poll in flight.
type poll struct{ cancel context.CancelCauseFunc }

// errTooManyPolls refuses a long-poll beyond api.MaxPollsPerWorker of one worker: a worker token must not
// hold an unbounded number of requests (and wake-up waiters) open.
var errTooManyPolls = errf(http.StatusTooManyRequests, "", api.CodeTooManyPolls,
	"this worker already holds %d lease long-polls open: wait for one to end (a worker needs one at a time)", api.MaxPollsPerWorker)

// trackPoll registers a lease long-poll of worker id, so that removing the worker ends it at once rather than
// leaving it waiting (and taking wake-ups meant for other workers) until its deadline, and refuses it with
// errTooManyPolls when the worker holds api.MaxPollsPerWorker already. The returned context ends with the
// request, or with cause errWorkerRemoved; call done when the poll ends.
func (s *Server) trackPoll(ctx context.Context, workerID string) (context.Context, func(), error) {
	s.pollMu.Lock()
	if len(s.polls[workerID]) >= api.MaxPollsPerWorker {
		s.pollMu.Unlock()
		return nil, nil, errTooManyPolls
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &poll{cancel: cancel}
	if s.polls[workerID] == nil {
		s.polls[workerID] = map[*poll]struct{}{}
	}
	s.polls[workerID][p] = struct{}{}
	s.pollMu.Unlock()
	s.npolls.Add(1)
	return ctx, func() {
		s.npolls.Add(-1)
		s.pollMu.Lock()
		delete(s.polls[workerID], p)
		if len(s.polls[workerID]) == 0 {
			delete(s.polls, workerID)
		}
		s.pollMu.Unlock()
		cancel(nil)
	}, nil
}

// endPolls ends the lease long-polls in flight of a removed worker.
func (s *Server) endPolls(workerID string) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	for p := range s.polls[workerID] {
		p.cancel(errWorkerRemoved)
	}
}

// deregister is a worker removing itself (POST /api/v1/worker/deregister), when it is uninstalled.
func (s *Server) deregister(w http.ResponseWriter, r *http.Request, c caller) error {
	out, err := s.remove(r.Context(), c.worker.ID, "itself")
	if errors.Is(err, store.ErrNotFound) { // removed by an admin since this request authenticated
		return errf(http.StatusUnauthorized, "", "", "invalid worker token: worker %s was removed already", c.worker.ID)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// waitForLease claims, and while there is nothing to claim waits for a wake-up, a hand-off, the poll
// interval or the deadline.
func (s *Server) waitForLease(ctx context.Context, waiter *wake.Waiter[store.ClaimParams, *api.Lease], params store.ClaimParams, deadline <-chan time.Time) (lease *api.Lease, err error) {
	var taken []wake.Ticket
	if waiter != nil {
		defer func() {
			claimed := ""
			if lease != nil {
				claimed = lease.Operation.ID
			}
			// A hand-off that raced with the end of the poll is a granted lease: return it.
			if d, ok := waiter.Done(claimed, taken); ok && lease == nil {
				lease, err = d, nil
			}
		}()
	}
	poll := time.NewTimer(s.recheckAfter())
	defer poll.Stop()
	for {
		l, err := s.st.Claim(ctx, s.stamped(params))
		if err != nil || l != nil {
			return l, err
		}
		taken = nil // what the waiter took was claimed by someone else
		if waiter == nil {
			return nil, nil
		}
		waiter.Idle()
		s.noteAsleep(1)
		stop := false
		select {
		case <-waiter.C():
		case <-poll.C:
			poll.Reset(s.recheckAfter())
		case <-deadline:
			stop = true
		case <-ctx.Done():
			stop = true
		}
		s.noteAsleep(-1)
		if stop {
			return nil, nil
		}
		if d, ok := waiter.Busy(); ok {
			return d, nil
		}
		taken = waiter.Take()
	}
}

// recheckShare is how many waiting long-polls share one PollInterval's re-checks: a server holds its re-checks
// of the store to about recheckShare per PollInterval, however many polls wait.
const recheckShare = 1000

// recheckAfter is when a waiting lease long-poll re-checks the store without a wake-up: a safety net, since
// wake-ups are reliable within a process and, across servers, lost only when a server dies between its commit
// and its publish (a listener that reconnects re-checks everything once). A lost wake-up of an operation any
// of many waiters could take is found by the first of them to re-check, so with more than recheckShare polls
// waiting each re-checks less often (then a wake-up meant for one worker only, its slot freed or an operation
// targeted at it, may wait for its next poll, at most api.MaxLeaseWait). The moment is drawn at random around
// the interval, so that polls begun together (a server restart) do not re-check together.
func (s *Server) recheckAfter() time.Duration {
	every := s.cfg.PollInterval * time.Duration(max(1, s.npolls.Load()/recheckShare))
	return every/2 + rand.N(every)
}

// noteAsleep tells the test hook (if any) that a long-poll fell asleep or woke.
func (s *Server) noteAsleep(delta int) {
	if s.asleep != nil {
		s.asleep(delta)
	}
}

// stamped returns a claim's params with the lease's times set from now: a lease lasts LeaseTTL from when it
// is granted, by a claim or by a hand-off alike, and goes only to a worker that heartbeated within the window
// (store.HeartbeatSince).
func (s *Server) stamped(p store.ClaimParams) store.ClaimParams {
	p.Now = time.Now().UTC()
	p.ExpiresAt = p.Now.Add(s.cfg.LeaseTTL)
	p.HeartbeatSince = store.HeartbeatSince(p.Now, s.cfg.HeartbeatInterval)
	return p
}

func sensitive(vars []api.Variable) []string {
	var out []string
	for _, v := range vars {
		if v.Sensitive {
			out = append(out, v.Value)
		}
	}
	return out
}

func (s *Server) leases(w http.ResponseWriter, r *http.Request, c caller) error {
	leases, err := s.st.Leases(r.Context(), c.worker.ID, time.Now().UTC())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.LeasesResponse{Leases: leases})
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.HeartbeatRequest
	if err := body(r, &req, validate.Heartbeat); err != nil {
		return err
	}
	now := time.Now().UTC()
	var reply store.HeartbeatReply
	if s.idleBeat(c.worker.ID, req, now) { // written with others soon (touch.go)
		reply.Drain = c.worker.DrainRequested
	} else {
		var err error
		reply, err = s.st.Heartbeat(r.Context(), store.Heartbeat{WorkerID: c.worker.ID, HeartbeatRequest: req, Now: now,
			LeaseExpiresAt: now.Add(s.cfg.LeaseTTL)})
		if errors.Is(err, store.ErrNotFound) { // removed since this request authenticated
			return errf(http.StatusUnauthorized, "", "", "invalid worker token: worker %s was removed; register again with a registration token", c.worker.ID)
		}
		if err != nil {
			return err
		}
		s.wroteBeat(c.worker.ID, c.tokenHash, req, now, reply)
	}
	s.heartbeatCached(c.tokenHash, req, reply.Drain) // the offer may have changed
	dv, err := s.heartbeatVersion(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{DesiredVersion: dv.Version, ChartURL: dv.ChartURL, ChartSHA256: dv.ChartSHA256,
		Cancel: reply.Cancel, Drain: reply.Drain, LeaseTTL: int(s.cfg.LeaseTTL / time.Second),
		HeartbeatSeconds: int(s.cfg.HeartbeatInterval / time.Second)})
	return nil
}

func (s *Server) ref(r *http.Request, c caller, leaseID string) store.LeaseRef {
	return store.LeaseRef{OperationID: r.PathValue("id"), LeaseID: leaseID, WorkerID: c.worker.ID, Now: time.Now().UTC()}
}

// maskFor returns the masker of an operation, or a 404 when it does not exist.
func (s *Server) maskFor(ctx context.Context, id string) (*mask.Masker, error) {
	m, err := s.masker(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(http.StatusNotFound, "", "", "operation %s does not exist", id)
	}
	return m, err
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.StatusRequest
	if err := body(r, &req, validate.Status); err != nil {
		return err
	}
	m, err := s.maskFor(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	op, err := s.st.SetRunning(r.Context(), s.ref(r, c, req.LeaseID), m.Mask(req.Message))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, op)
	return nil
}

func (s *Server) appendLogs(w http.ResponseWriter, r *http.Request, c caller) error {
	body := logBody()
	defer keepLogBody(body)
	if n := r.ContentLength; n > 0 && n <= logsBodyLimit {
		body.Grow(int(n) + bytes.MinRead) // one allocation for the whole batch
	}
	if _, err := body.ReadFrom(r.Body); err != nil {
		return fmt.Errorf("reading the request body: %w", err) // a *http.MaxBytesError stays visible
	}
	var req api.AppendLogsRequest
	if err := decodeAppendLogs(body.Bytes(), &req); err != nil {
		return err
	}
	if err := validate.AppendLogs(&req); err != nil {
		return err
	}
	resp, err := s.appendLines(r.Context(), s.ref(r, c, req.LeaseID), req.Lines)
	if err != nil {
		return err
	}
	if len(req.Lines) == 0 { // the form that asks: it learns the marker the pod pushed, if any
		if resp.PodEnd, err = s.st.PodEnd(r.Context(), r.PathValue("id")); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// appendLines masks and stores validated lines of a leased operation, the worker's and those its pod pushes
// alike, and wakes the log's followers.
func (s *Server) appendLines(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	m, err := s.maskFor(ctx, ref.OperationID)
	if err != nil {
		return api.AppendLogsResponse{}, err
	}
	now := time.Now().UTC()
	for i := range lines {
		l := &lines[i]
		l.Text = m.Mask(l.Text)
		if l.Time.IsZero() {
			l.Time = now
		}
	}
	resp, err := s.st.AppendLogs(ctx, ref, lines)
	if err != nil {
		return resp, err
	}
	if len(lines) > 0 {
		s.logs.Signal(ref.OperationID)
		s.signal(wake.Signal{Kind: wake.Lines, ID: ref.OperationID})
	}
	s.metrics.logLines.Add(float64(resp.Stored))
	s.metrics.logBytes.Add(float64(resp.StoredBytes))
	return resp, nil
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.ResultRequest
	if err := body(r, &req, validate.Result); err != nil {
		return err
	}
	m, err := s.maskFor(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	op, ch, err := s.st.Finish(r.Context(), s.ref(r, c, req.LeaseID),
		store.Result{State: req.State, ExitCode: req.ExitCode, Message: m.Mask(req.Message), LastSeq: req.LastSeq, Usage: req.Usage})
	if err != nil {
		return err
	}
	s.apply(ch)
	s.wakeWorker(c.worker.ID) // a slot freed: a poll of this worker held back by its capacity may claim now
	writeJSON(w, http.StatusOK, op)
	return nil
}
