package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Register registers a worker; the client's token must be a registration token. Not retried: a repeat would
// register a second worker.
func (c *Client) Register(ctx context.Context, req api.RegisterRequest) (api.RegisterResponse, error) {
	return do[api.RegisterResponse](ctx, c, retryIfNotSent, "POST", "/api/v1/worker/register", req)
}

// Lease long-polls up to wait (at most 30s) for one operation; nil when none arrived. Retries reuse one
// request id, so a lost reply never strands an operation.
func (c *Client) Lease(ctx context.Context, wait time.Duration) (*api.Lease, error) {
	req := api.LeaseRequest{WaitSeconds: int(wait / time.Second), RequestID: newRequestID(), LogLimit: c.logLimit}
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
	return do[api.HeartbeatResponse](ctx, c, retrySafe, "POST", "/api/v1/worker/heartbeat", req)
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
	var enc api.LineEncoder
	for i, l := range lines {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = enc.Append(b, l); err != nil {
			return nil, err
		}
	}
	return append(b, "]}"...), nil
}

// Result ends a leased operation. Use MissingLines(err) to learn which lines to re-send.
func (c *Client) Result(ctx context.Context, opID string, req api.ResultRequest) (api.Operation, error) {
	return do[api.Operation](ctx, c, retrySafe, "POST", "/api/v1/worker/operations/"+url.PathEscape(opID)+"/result", req)
}

// Deregister removes this worker from the server (on uninstall): its token stops working at once and the
// operations it held become lost. Retried only when the connection was refused: a repeat that reached the
// server after the first succeeded gets 401, because the token it carries no longer works (IsUnauthorized).
func (c *Client) Deregister(ctx context.Context) (api.WorkerRemoval, error) {
	return do[api.WorkerRemoval](ctx, c, retryIfNotSent, "POST", "/api/v1/worker/deregister", nil)
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
