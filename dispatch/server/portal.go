package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/portal"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// portalBackend is the server as the web portal sees it (portal.Backend). Each call runs the admin route of
// the API that does the same thing, in-process and as the admin, so the portal shows and changes exactly what
// the API does: the same masking, validation, refusals and log stream.
type portalBackend struct{ s *Server }

var _ portal.Backend = portalBackend{}

// IsAdminToken compares the token's hash with the admin token's in constant time.
func (b portalBackend) IsAdminToken(token string) bool { return b.s.isAdmin(hashToken(token)) }

func (b portalBackend) Pools(ctx context.Context) ([]api.Pool, error) {
	var out api.PoolList
	return out.Pools, b.call(ctx, "GET", "/api/v1/pools", nil, nil, nil, &out)
}

func (b portalBackend) Workers(ctx context.Context) ([]api.Worker, error) {
	var out api.WorkerList
	return out.Workers, b.call(ctx, "GET", "/api/v1/workers", nil, nil, nil, &out)
}

func (b portalBackend) Operations(ctx context.Context, f portal.Filter) ([]api.Operation, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": string(f.State), "pool": f.Pool, "worker": f.WorkerID, "deployment": f.DeploymentID} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out api.OperationList
	return out.Operations, b.call(ctx, "GET", "/api/v1/operations", nil, q, nil, &out)
}

func (b portalBackend) Operation(ctx context.Context, id string) (api.Operation, error) {
	var out api.Operation
	return out, b.call(ctx, "GET", "/api/v1/operations/{id}", map[string]string{"id": id}, nil, nil, &out)
}

func (b portalBackend) CancelOperation(ctx context.Context, id string) (api.Operation, error) {
	var out api.Operation
	return out, b.call(ctx, "POST", "/api/v1/operations/{id}/cancel", map[string]string{"id": id}, nil, nil, &out)
}

func (b portalBackend) Deployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	var out api.DeploymentList
	return out.Deployments, b.call(ctx, "GET", "/api/v1/deployments", nil, url.Values{"limit": {strconv.Itoa(limit)}}, nil, &out)
}

func (b portalBackend) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	var out api.Deployment
	return out, b.call(ctx, "GET", "/api/v1/deployments/{id}", map[string]string{"id": id}, nil, nil, &out)
}

func (b portalBackend) CancelDeployment(ctx context.Context, id string) (api.Deployment, error) {
	var out api.Deployment
	return out, b.call(ctx, "POST", "/api/v1/deployments/{id}/cancel", map[string]string{"id": id}, nil, nil, &out)
}

func (b portalBackend) CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.RegistrationToken, error) {
	var out api.RegistrationToken
	return out, b.call(ctx, "POST", "/api/v1/tokens", nil, nil, req, &out)
}

func (b portalBackend) RequestsAdvice(ctx context.Context, pool, step string) (api.RequestsAdvice, error) {
	var out api.RequestsAdvice
	q := url.Values{"pool": {pool}}
	if step != "" {
		q.Set("step", step)
	}
	return out, b.call(ctx, "GET", "/api/v1/requests/advice", nil, q, nil, &out)
}

// FollowLogs serves GET /api/v1/operations/{id}/logs (the stream `octo-worker logs -f` follows) to w, with
// r's after and follow parameters.
func (b portalBackend) FollowLogs(w http.ResponseWriter, r *http.Request, id string) {
	rt, ok := b.s.route("GET", "/api/v1/operations/{id}/logs")
	if !ok {
		writeError(w, errf(http.StatusInternalServerError, "", "", "the log route is missing"))
		return
	}
	r.SetPathValue("id", id)
	if err := rt.handle(w, r, caller{admin: true}); err != nil {
		writeError(w, b.s.toHTTPError(r, err))
	}
}

// Explain is the API's status and message for an error of this backend.
func (b portalBackend) Explain(r *http.Request, err error) (int, string) {
	he := b.s.toHTTPError(r, err)
	if he.field != "" {
		return he.status, he.field + ": " + he.msg
	}
	return he.status, he.msg
}

// call runs the handler of route method+pattern as the admin, with path values, query and a JSON body in,
// and decodes its JSON reply into out.
func (b portalBackend) call(ctx context.Context, method, pattern string, path map[string]string, q url.Values, in, out any) error {
	rt, ok := b.s.route(method, pattern)
	if !ok {
		return fmt.Errorf("portal: no route %s %s", method, pattern)
	}
	r, err := http.NewRequestWithContext(ctx, method, pattern, http.NoBody)
	if err != nil {
		return fmt.Errorf("portal: building %s %s: %w", method, pattern, err)
	}
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("portal: encoding %s %s: %w", method, pattern, err)
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
		r.Header.Set("Content-Type", "application/json")
	}
	r.URL.RawQuery = q.Encode()
	for k, v := range path {
		r.SetPathValue(k, v)
	}
	var rec reply
	if err := rt.handle(&rec, r, caller{admin: true}); err != nil {
		return err
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("portal: decoding the reply of %s %s: %w", method, pattern, err)
	}
	return nil
}

// route finds a route of the table by method and pattern.
func (s *Server) route(method, pattern string) (route, bool) {
	for _, rt := range s.routes {
		if rt.method == method && rt.pattern == pattern {
			return rt, true
		}
	}
	return route{}, false
}

// reply is the http.ResponseWriter an in-process call writes to.
type reply struct {
	header http.Header
	body   bytes.Buffer
}

func (r *reply) Header() http.Header {
	if r.header == nil {
		r.header = http.Header{}
	}
	return r.header
}
func (r *reply) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *reply) WriteHeader(int)             {}

// StartSession keeps a portal login in the store, where every server sharing it finds it.
func (b portalBackend) StartSession(ctx context.Context, hash []byte, csrf string, started, expires time.Time) error {
	return b.s.st.StartSession(ctx, store.Session{Hash: hash, CSRF: csrf, Started: started, Expires: expires})
}

// Session returns the CSRF token of a live portal login.
func (b portalBackend) Session(ctx context.Context, hash []byte, now time.Time) (string, bool, error) {
	s, err := b.s.st.Session(ctx, hash, now)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	return s.CSRF, err == nil, err
}

// EndSession ends a portal login.
func (b portalBackend) EndSession(ctx context.Context, hash []byte) error {
	return b.s.st.EndSession(ctx, hash)
}
