package client

import (
	"context"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Pod is the client a script pod's runner uses, with its operation's pod token (PROTOCOL.md, "The script
// pod's channel"). Its calls are safe to retry: a push is idempotent on seq.
type Pod struct {
	c *Client
}

// NewPod returns a client of the server at url with a pod token. cfg tunes retries and timeouts; its Server
// and Token are replaced by url and token.
func NewPod(url, token string, cfg Config) (*Pod, error) {
	if token == "" {
		return nil, fmt.Errorf("no pod token: the operation's Secret has none (an older server, or no channel)")
	}
	cfg.Server, cfg.Token = url, token
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return &Pod{c: c}, nil
}

// LogState asks how far the server holds the operation's log.
func (p *Pod) LogState(ctx context.Context) (api.PodLogState, error) {
	return do[api.PodLogState](ctx, p.c, retrySafe, "GET", "/api/v1/pod/log-state", nil)
}

// PushLogs pushes records as the runner printed them (without their newline).
func (p *Pod) PushLogs(ctx context.Context, records []string) (api.PodLogState, error) {
	return do[api.PodLogState](ctx, p.c, retrySafe, "POST", "/api/v1/pod/logs", api.PodLogsRequest{Records: records})
}
