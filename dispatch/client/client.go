// Package client is the typed Go client of the dispatch API, used by the CLI and by the worker agent. It
// retries (go-retryablehttp, exponential backoff) only what is safe to repeat:
//
//   - reads, heartbeats, status reports, log appends (idempotent on seq; seq 0 notes may repeat), results
//     (the server accepts a replay of the same result) and cancels: on transport errors, 429 and 5xx;
//   - a lease: a lost reply would otherwise strand an operation that the server leased to nobody who knows,
//     so every Lease call carries a fresh request id and its retries reuse it; the server answers a retry
//     with the lease it already granted for that id instead of leasing a second operation;
//   - everything else (register, submit, deploy, create, removing a worker, deregistering): only when the
//     connection was refused, i.e. the request cannot have reached the server.
//
// 4xx replies are never retried; they come back as *Error carrying the server's api.Error.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// Server is the dispatch server's base URL, e.g. https://dispatch.example.com (required).
	Server string
	// Token is the bearer token: the admin token for the CLI, a registration token to register, then the
	// worker token (see WithToken).
	Token string
	// CACertFile, when set, is a PEM file of the CA that signed the server's certificate.
	CACertFile string
	// HTTPClient overrides the underlying client (its Transport carries TLS settings). Default: a new client
	// with Go's default transport settings.
	HTTPClient *http.Client
	// RetryMax is how many times a retryable request is retried (default 5); RetryWaitMin/Max bound the
	// backoff between attempts (default 200ms and 5s).
	RetryMax     int
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// Timeout bounds one attempt of a request, long-polls and log streams excepted (default 60s).
	Timeout time.Duration
	// UserAgent is sent with every request (default "octo-worker").
	UserAgent string
	// Log receives retry notices at debug level (default: discarded).
	Log *logrus.Entry
}

// Client talks to one dispatch server.
type Client struct {
	base    *url.URL
	token   string
	rc      *retryablehttp.Client
	timeout time.Duration
	agent   string
}

// New returns a client for cfg.Server.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("no dispatch server URL: use --server or OCTO_SERVER (e.g. http://127.0.0.1:8080)")
	}
	base, err := url.Parse(strings.TrimRight(cfg.Server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", cfg.Server)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		if cfg.CACertFile != "" {
			pem, err := os.ReadFile(cfg.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("reading the CA certificate: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("reading the CA certificate %s: no PEM certificate in it", cfg.CACertFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		hc = &http.Client{Transport: tr}
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = hc
	rc.RetryMax = 5
	rc.RetryWaitMin, rc.RetryWaitMax = 200*time.Millisecond, 5*time.Second
	if cfg.RetryMax != 0 {
		rc.RetryMax = max(cfg.RetryMax, 0)
	}
	if cfg.RetryWaitMin > 0 {
		rc.RetryWaitMin = cfg.RetryWaitMin
	}
	if cfg.RetryWaitMax > 0 {
		rc.RetryWaitMax = cfg.RetryWaitMax
	}
	rc.CheckRetry = checkRetry
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.Logger = nil
	if cfg.Log != nil {
		rc.Logger = leveled{cfg.Log}
	}
	c := &Client{base: base, token: cfg.Token, rc: rc, timeout: cfg.Timeout, agent: cfg.UserAgent}
	if c.timeout <= 0 {
		c.timeout = 60 * time.Second
	}
	if c.agent == "" {
		c.agent = "octo-worker"
	}
	return c, nil
}

// WithToken returns a client that sends token instead, sharing connections (after Register, the worker
// switches to its worker token).
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// Error is a non-2xx reply: the protocol's api.StatusError, whose meaning api.IsLeaseLost, api.MissingLines
// and api.Permanent tell.
type Error = api.StatusError

func asError(err error) (*Error, bool) { return api.AsStatusError(err) }

// IsNotFound reports a 404.
func IsNotFound(err error) bool { e, ok := asError(err); return ok && e.Status == http.StatusNotFound }

// IsUnauthorized reports a 401: the token is missing, unknown or no longer works (a removed worker's).
func IsUnauthorized(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusUnauthorized
}

// Code returns the api.Code* of an error reply, or "".
func Code(err error) string {
	if e, ok := asError(err); ok {
		return e.Body.Code
	}
	return ""
}

// ---- plumbing ----

type retryKey struct{}

// retry policies, carried in the request context so that CheckRetry (which sees no request) can read them.
const (
	retryIfNotSent = iota // only when the connection was refused
	retrySafe             // on transport errors, 429 and 5xx
)

func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	policy, _ := ctx.Value(retryKey{}).(int)
	if err != nil {
		if policy == retrySafe || errors.Is(err, syscall.ECONNREFUSED) {
			return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		}
		return false, nil
	}
	if policy == retrySafe {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, nil)
	}
	return false, nil
}

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = c.base.Path + path
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// send performs one logical request (with its retries) and returns the response for the caller to read.
func (c *Client) send(ctx context.Context, policy int, method, path string, q url.Values, in any, contentType string) (*http.Response, error) {
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	case jsonBody:
		body, contentType = v, "application/json"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding the request: %w", err)
		}
		body, contentType = b, "application/json"
	}
	var bodyArg any
	if body != nil {
		bodyArg = body
	}
	req, err := retryablehttp.NewRequestWithContext(context.WithValue(ctx, retryKey{}, policy), method, c.url(path, q), bodyArg)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.agent)
	resp, err := c.rc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

func readError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &e.Body) != nil || e.Body.Error == "" {
		e.Body.Error = strings.TrimSpace(string(b))
		if e.Body.Error == "" {
			e.Body.Error = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// call sends a JSON request and decodes the JSON reply into out (when not nil). It reports false when the
// server replied 204.
func (c *Client) call(ctx context.Context, policy int, method, path string, in, out any) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.callNoTimeout(ctx, policy, method, path, nil, in, out)
}

func (c *Client) callNoTimeout(ctx context.Context, policy int, method, path string, q url.Values, in, out any) (bool, error) {
	resp, err := c.send(ctx, policy, method, path, q, in, "")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return false, nil
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return false, fmt.Errorf("%s %s: decoding the reply: %w", method, path, err)
		}
	}
	return true, nil
}

// leveled adapts logrus to retryablehttp's logger; everything goes to debug.
type leveled struct{ e *logrus.Entry }

func (l leveled) fields(kv []any) *logrus.Entry {
	e := l.e
	for i := 0; i+1 < len(kv); i += 2 {
		e = e.WithField(fmt.Sprint(kv[i]), kv[i+1])
	}
	return e
}
func (l leveled) Error(msg string, kv ...any) { l.fields(kv).Debug(msg) }
func (l leveled) Info(msg string, kv ...any)  { l.fields(kv).Debug(msg) }
func (l leveled) Debug(msg string, kv ...any) { l.fields(kv).Debug(msg) }
func (l leveled) Warn(msg string, kv ...any)  { l.fields(kv).Debug(msg) }

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- worker calls ----

// Register registers a worker; the client's token must be a registration token. Not retried: a repeat would
// register a second worker.
func (c *Client) Register(ctx context.Context, req api.RegisterRequest) (api.RegisterResponse, error) {
	var out api.RegisterResponse
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/worker/register", req, &out)
	return out, err
}

// Lease long-polls up to wait (at most 30s) for one operation; nil when none arrived. Retries reuse one
// request id, so a lost reply never strands an operation.
func (c *Client) Lease(ctx context.Context, wait time.Duration) (*api.Lease, error) {
	req := api.LeaseRequest{WaitSeconds: int(wait / time.Second), RequestID: newRequestID()}
	ctx, cancel := context.WithTimeout(ctx, wait+c.timeout)
	defer cancel()
	var l api.Lease
	got, err := c.callNoTimeout(ctx, retrySafe, "POST", "/api/v1/worker/lease", nil, req, &l)
	if err != nil || !got {
		return nil, err
	}
	return &l, nil
}

// Leases lists the live leases this worker holds.
func (c *Client) Leases(ctx context.Context) ([]api.Lease, error) {
	var out api.LeasesResponse
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/worker/leases", nil, &out)
	return out.Leases, err
}

// Heartbeat reports the worker's state and renews the leases of req.Running.
func (c *Client) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	var out api.HeartbeatResponse
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/worker/heartbeat", req, &out)
	return out, err
}

// SetRunning reports that a leased operation runs (its Job exists).
func (c *Client) SetRunning(ctx context.Context, opID, leaseID, message string) (api.Operation, error) {
	var out api.Operation
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/worker/operations/"+url.PathEscape(opID)+"/status",
		api.StatusRequest{LeaseID: leaseID, State: api.StateRunning, Message: message}, &out)
	return out, err
}

// AppendLogs appends lines to a leased operation's log. An empty batch asks how far the log is contiguous.
func (c *Client) AppendLogs(ctx context.Context, opID, leaseID string, lines []api.LogLine) (api.AppendLogsResponse, error) {
	var out api.AppendLogsResponse
	body, err := appendLogsBody(leaseID, lines)
	if err != nil {
		return out, fmt.Errorf("encoding the request: %w", err)
	}
	_, err = c.call(ctx, retrySafe, "POST", "/api/v1/worker/operations/"+url.PathEscape(opID)+"/logs", body, &out)
	return out, err
}

// jsonBody is a request body already encoded as JSON.
type jsonBody []byte

// appendLogsBody encodes an api.AppendLogsRequest as json.Marshal would (lines: [] when there are none),
// without reflection: batches hold thousands of lines.
func appendLogsBody(leaseID string, lines []api.LogLine) (jsonBody, error) {
	id, err := json.Marshal(leaseID)
	if err != nil {
		return nil, err
	}
	size := len(`{"lease_id":,"lines":[]}`) + len(id)
	for _, l := range lines {
		size += len(l.Text) + 96 // the fields around a text take 70-80 bytes
	}
	b := make([]byte, 0, size)
	b = append(b, `{"lease_id":`...)
	b = append(b, id...)
	b = append(b, `,"lines":[`...)
	for i, l := range lines {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = l.AppendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, "]}"...), nil
}

// Result ends a leased operation. Use MissingLines(err) to learn which lines to re-send.
func (c *Client) Result(ctx context.Context, opID string, req api.ResultRequest) (api.Operation, error) {
	var out api.Operation
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/worker/operations/"+url.PathEscape(opID)+"/result", req, &out)
	return out, err
}

// Deregister removes this worker from the server (on uninstall): its token stops working at once and the
// operations it held become lost. Retried only when the connection was refused: a repeat that reached the
// server after the first succeeded gets 401, because the token it carries no longer works (IsUnauthorized).
func (c *Client) Deregister(ctx context.Context) (api.WorkerRemoval, error) {
	var out api.WorkerRemoval
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/worker/deregister", nil, &out)
	return out, err
}

// DownloadChart fetches a chart archive (chartURL as the heartbeat reply gives it, relative to the server)
// and verifies its SHA-256 against wantSHA256 (hex) when given.
func (c *Client) DownloadChart(ctx context.Context, chartURL, wantSHA256 string) ([]byte, error) {
	ref, err := url.Parse(chartURL)
	if err != nil {
		return nil, fmt.Errorf("chart URL %q: %w", chartURL, err)
	}
	if ref.IsAbs() && ref.Host != c.base.Host {
		return nil, fmt.Errorf("chart URL %q points away from the dispatch server %s: refusing to send the worker token there", chartURL, c.base.Host)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, retrySafe, "GET", strings.TrimPrefix(ref.Path, c.base.Path), nil, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("downloading the chart: %w", err)
	}
	if wantSHA256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, wantSHA256) {
			return nil, fmt.Errorf("the chart from %s has SHA-256 %s, want %s: not installing it", chartURL, got, wantSHA256)
		}
	}
	return data, nil
}

// ---- admin calls ----

// CreatePool creates a pool.
func (c *Client) CreatePool(ctx context.Context, name, description string) (api.Pool, error) {
	var out api.Pool
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/pools", api.CreatePoolRequest{Name: name, Description: description}, &out)
	return out, err
}

// Pools lists pools.
func (c *Client) Pools(ctx context.Context) ([]api.Pool, error) {
	var out api.PoolList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/pools", nil, &out)
	return out.Pools, err
}

// CreateToken creates a registration token for pools; ttl 0 means the server's default (24h).
func (c *Client) CreateToken(ctx context.Context, pools []string, ttl time.Duration) (api.RegistrationToken, error) {
	var out api.RegistrationToken
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/tokens", api.CreateTokenRequest{Pools: pools, TTLSeconds: int(ttl / time.Second)}, &out)
	return out, err
}

// Tokens lists registration tokens (without secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.RegistrationToken, error) {
	var out api.TokenList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes a registration token.
func (c *Client) RevokeToken(ctx context.Context, id string) (api.RegistrationToken, error) {
	var out api.RegistrationToken
	_, err := c.call(ctx, retrySafe, "DELETE", "/api/v1/tokens/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Submit submits an operation. Not retried once sent: a repeat would run it twice.
func (c *Client) Submit(ctx context.Context, spec api.OperationSpec) (api.Operation, error) {
	var out api.Operation
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/operations", spec, &out)
	return out, err
}

// Deploy submits a deployment. Not retried once sent.
func (c *Client) Deploy(ctx context.Context, spec api.DeploymentSpec) (api.Deployment, error) {
	var out api.Deployment
	_, err := c.call(ctx, retryIfNotSent, "POST", "/api/v1/deployments", spec, &out)
	return out, err
}

// ListOptions filters Operations. Zero fields match everything; Limit 0 means 100.
type ListOptions struct {
	State        api.State
	Pool         string
	WorkerID     string
	DeploymentID string
	Limit        int
}

// Operations lists operation summaries, newest first.
func (c *Client) Operations(ctx context.Context, o ListOptions) ([]api.Operation, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": string(o.State), "pool": o.Pool, "worker": o.WorkerID, "deployment": o.DeploymentID} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var out api.OperationList
	_, err := c.callNoTimeout(ctx, retrySafe, "GET", "/api/v1/operations", q, nil, &out)
	return out.Operations, err
}

// Operation returns one operation.
func (c *Client) Operation(ctx context.Context, id string) (api.Operation, error) {
	var out api.Operation
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/operations/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Cancel cancels an operation.
func (c *Client) Cancel(ctx context.Context, id string) (api.Operation, error) {
	var out api.Operation
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/operations/"+url.PathEscape(id)+"/cancel", nil, &out)
	return out, err
}

// Deployments lists deployments, newest first (limit 0 means 100).
func (c *Client) Deployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var out api.DeploymentList
	_, err := c.callNoTimeout(ctx, retrySafe, "GET", "/api/v1/deployments", q, nil, &out)
	return out.Deployments, err
}

// Deployment returns one deployment.
func (c *Client) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	var out api.Deployment
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/deployments/"+url.PathEscape(id), nil, &out)
	return out, err
}

// CancelDeployment cancels a deployment.
func (c *Client) CancelDeployment(ctx context.Context, id string) (api.Deployment, error) {
	var out api.Deployment
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/deployments/"+url.PathEscape(id)+"/cancel", nil, &out)
	return out, err
}

// Workers lists registered workers.
func (c *Client) Workers(ctx context.Context) ([]api.Worker, error) {
	var out api.WorkerList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/workers", nil, &out)
	return out.Workers, err
}

// DrainWorker asks a worker to drain (or to resume when drain is false).
func (c *Client) DrainWorker(ctx context.Context, id string, drain bool) (api.Worker, error) {
	var out api.Worker
	_, err := c.call(ctx, retrySafe, "POST", "/api/v1/workers/"+url.PathEscape(id)+"/drain", api.DrainRequest{Drain: drain}, &out)
	return out, err
}

// RemoveWorker removes a worker: its token stops working at once, the operations it held become lost, and it
// leaves the list. Retried only when the connection was refused: a repeat after a removal that succeeded
// would get 404.
func (c *Client) RemoveWorker(ctx context.Context, id string) (api.WorkerRemoval, error) {
	var out api.WorkerRemoval
	_, err := c.call(ctx, retryIfNotSent, "DELETE", "/api/v1/workers/"+url.PathEscape(id), nil, &out)
	return out, err
}

// UploadChart uploads the chart archive of a worker version.
func (c *Client) UploadChart(ctx context.Context, version string, archive []byte) (api.Chart, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, retrySafe, "PUT", "/api/v1/charts/"+url.PathEscape(version), nil, archive, "application/gzip")
	if err != nil {
		return api.Chart{}, err
	}
	defer resp.Body.Close()
	var out api.Chart
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("decoding the reply: %w", err)
	}
	return out, nil
}

// SetDesiredVersion sets the worker version every worker should run.
func (c *Client) SetDesiredVersion(ctx context.Context, version string) (api.DesiredVersion, error) {
	var out api.DesiredVersion
	_, err := c.call(ctx, retrySafe, "PUT", "/api/v1/version", api.DesiredVersion{Version: version}, &out)
	return out, err
}

// DesiredVersion returns the desired worker version ("" when none is set).
func (c *Client) DesiredVersion(ctx context.Context) (api.DesiredVersion, error) {
	var out api.DesiredVersion
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/version", nil, &out)
	return out, err
}

// ---- logs ----

// LogsOptions selects what Logs reads.
type LogsOptions struct {
	// After is the position to read after (0: from the start).
	After int64
	// Follow waits for more lines until the operation ends. A broken stream is resumed from the last line
	// received, so no line is missed or repeated.
	Follow bool
}

// Logs calls fn for each stored line of an operation after opts.After, in order. It returns the operation's
// end when the stream reached it (always when following, unless ctx ends first), nil otherwise.
func (c *Client) Logs(ctx context.Context, id string, opts LogsOptions, fn func(api.LogLine) error) (*api.LogEnd, error) {
	after := opts.After
	backoff := c.rc.RetryWaitMin
	for {
		end, last, err := c.logsOnce(ctx, id, after, opts.Follow, fn)
		if last > after {
			after, backoff = last, c.rc.RetryWaitMin
		}
		if end != nil {
			return end, nil
		}
		var fe fnError
		if errors.As(err, &fe) {
			return nil, fe.err
		}
		if !opts.Follow {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, nil // the operation has not ended: that is all there is for now
			}
			return nil, err
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			return nil, err
		}
		// The stream ended early (network, server restart): resume after the last line received.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.rc.RetryWaitMax)
	}
}

type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func (c *Client) logsOnce(ctx context.Context, id string, after int64, follow bool, fn func(api.LogLine) error) (*api.LogEnd, int64, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.send(ctx, retrySafe, "GET", "/api/v1/operations/"+url.PathEscape(id)+"/logs", q, nil, "")
	if err != nil {
		return nil, after, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev api.LogEvent
		if !api.DecodeLogEvent(line, &ev) { // the fast path takes line records
			if err := json.Unmarshal(line, &ev); err != nil {
				return nil, after, fmt.Errorf("decoding a log record: %w", err)
			}
		}
		switch {
		case ev.End != nil:
			return ev.End, after, nil
		case ev.Line != nil:
			if err := fn(*ev.Line); err != nil {
				return nil, after, fnError{err}
			}
			after = ev.Line.Pos
		}
	}
	if err := sc.Err(); err != nil {
		return nil, after, fmt.Errorf("reading the log stream: %w", err)
	}
	return nil, after, io.ErrUnexpectedEOF
}
