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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
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
	// logLimit is sent with every lease long-poll (api.LeaseRequest.LogLimit); 0: the server's default.
	logLimit int64
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

// WithLogLimit returns a client whose lease long-polls ask the server to keep at most n bytes of log of each
// operation leased (the chart's scriptPods.logLimit); 0: the server's default.
func (c *Client) WithLogLimit(n int64) *Client {
	cp := *c
	cp.logLimit = n
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
