package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// CreatePool creates a pool.
func (c *Client) CreatePool(ctx context.Context, name, description string) (api.Pool, error) {
	return do[api.Pool](ctx, c, retryIfNotSent, "POST", "/api/v1/pools", api.CreatePoolRequest{Name: name, Description: description})
}

// Pools lists pools.
func (c *Client) Pools(ctx context.Context) ([]api.Pool, error) {
	var out api.PoolList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/pools", nil, &out)
	return out.Pools, err
}

// CreateToken creates a registration token for pools; ttl 0 means the server's default (24h).
func (c *Client) CreateToken(ctx context.Context, pools []string, ttl time.Duration) (api.RegistrationToken, error) {
	return do[api.RegistrationToken](ctx, c, retryIfNotSent, "POST", "/api/v1/tokens", api.CreateTokenRequest{Pools: pools, TTLSeconds: int(ttl / time.Second)})
}

// Tokens lists registration tokens (without secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.RegistrationToken, error) {
	var out api.TokenList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes a registration token.
func (c *Client) RevokeToken(ctx context.Context, id string) (api.RegistrationToken, error) {
	return do[api.RegistrationToken](ctx, c, retrySafe, "DELETE", "/api/v1/tokens/"+url.PathEscape(id), nil)
}

// Submit submits an operation. Not retried once sent: a repeat would run it twice.
func (c *Client) Submit(ctx context.Context, spec api.OperationSpec) (api.Operation, error) {
	return do[api.Operation](ctx, c, retryIfNotSent, "POST", "/api/v1/operations", spec)
}

// Deploy submits a deployment. Not retried once sent.
func (c *Client) Deploy(ctx context.Context, spec api.DeploymentSpec) (api.Deployment, error) {
	return do[api.Deployment](ctx, c, retryIfNotSent, "POST", "/api/v1/deployments", spec)
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
	return do[api.Operation](ctx, c, retrySafe, "GET", "/api/v1/operations/"+url.PathEscape(id), nil)
}

// Cancel cancels an operation.
func (c *Client) Cancel(ctx context.Context, id string) (api.Operation, error) {
	return do[api.Operation](ctx, c, retrySafe, "POST", "/api/v1/operations/"+url.PathEscape(id)+"/cancel", nil)
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
	return do[api.Deployment](ctx, c, retrySafe, "GET", "/api/v1/deployments/"+url.PathEscape(id), nil)
}

// CancelDeployment cancels a deployment.
func (c *Client) CancelDeployment(ctx context.Context, id string) (api.Deployment, error) {
	return do[api.Deployment](ctx, c, retrySafe, "POST", "/api/v1/deployments/"+url.PathEscape(id)+"/cancel", nil)
}

// Workers lists registered workers.
func (c *Client) Workers(ctx context.Context) ([]api.Worker, error) {
	var out api.WorkerList
	_, err := c.call(ctx, retrySafe, "GET", "/api/v1/workers", nil, &out)
	return out.Workers, err
}

// Worker shows one worker: its state, the checks of its last report and when it ran them.
func (c *Client) Worker(ctx context.Context, id string) (api.Worker, error) {
	return do[api.Worker](ctx, c, retrySafe, "GET", "/api/v1/workers/"+url.PathEscape(id), nil)
}

// CheckWorker asks a worker to run a health check now: it queues a tiny script operation that only that
// worker takes, and returns it (follow it with FollowLogs or Operation). Retried only when the connection was
// refused: a repeat would queue a second check.
func (c *Client) CheckWorker(ctx context.Context, id string) (api.Operation, error) {
	return do[api.Operation](ctx, c, retryIfNotSent, "POST", "/api/v1/workers/"+url.PathEscape(id)+"/check", nil)
}

// DrainWorker asks a worker to drain (or to resume when drain is false).
func (c *Client) DrainWorker(ctx context.Context, id string, drain bool) (api.Worker, error) {
	return do[api.Worker](ctx, c, retrySafe, "POST", "/api/v1/workers/"+url.PathEscape(id)+"/drain", api.DrainRequest{Drain: drain})
}

// RemoveWorker removes a worker: its token stops working at once, the operations it held become lost, and it
// leaves the list. Retried only when the connection was refused: a repeat after a removal that succeeded
// would get 404.
func (c *Client) RemoveWorker(ctx context.Context, id string) (api.WorkerRemoval, error) {
	return do[api.WorkerRemoval](ctx, c, retryIfNotSent, "DELETE", "/api/v1/workers/"+url.PathEscape(id), nil)
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
	return do[api.DesiredVersion](ctx, c, retrySafe, "PUT", "/api/v1/version", api.DesiredVersion{Version: version})
}

// DesiredVersion returns the desired worker version ("" when none is set).
func (c *Client) DesiredVersion(ctx context.Context) (api.DesiredVersion, error) {
	return do[api.DesiredVersion](ctx, c, retrySafe, "GET", "/api/v1/version", nil)
}

// RequestsAdvice recommends script pod requests for a pool, or for the operations named step in it.
func (c *Client) RequestsAdvice(ctx context.Context, pool, step string) (api.RequestsAdvice, error) {
	q := url.Values{"pool": {pool}}
	if step != "" {
		q.Set("step", step)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var out api.RequestsAdvice
	_, err := c.callNoTimeout(ctx, retrySafe, "GET", "/api/v1/requests/advice", q, nil, &out)
	return out, err
}
