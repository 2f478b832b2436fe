package client_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/client"
)

// countingTransport counts the attempts the client makes, over the real transport.
type countingTransport struct {
	inner http.RoundTripper
	n     atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.inner.RoundTrip(r)
}

// TestErrorsThatCannotHealAreNotRetried: a wrong scheme, a host that does not resolve and a certificate
// the client does not trust are answered after one attempt (even for a read, which is retried on other
// transport errors), with a message that says what to fix.
func TestErrorsThatCannotHealAreNotRetried(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(secure.Close)
	tests := []struct {
		name   string
		server string
		says   string
	}{
		{"HTTP answer to an HTTPS client", strings.Replace(plain.URL, "http://", "https://", 1), "use http://"},
		{"host that does not resolve", "http://no-such-host.invalid:8080", "does not resolve"},
		{"unknown certificate authority", secure.URL, "--ca-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &countingTransport{inner: http.DefaultTransport.(*http.Transport).Clone()}
			c, err := client.New(client.Config{Server: tt.server, Token: "t", HTTPClient: &http.Client{Transport: tr},
				RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Operations(t.Context(), client.ListOptions{})
			var dns *net.DNSError
			if errors.As(err, &dns) && !dns.IsNotFound {
				t.Skipf("this machine's resolver cannot say that a name does not exist: %v", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error = %v; want one that says %q", err, tt.says)
			}
			if n := tr.n.Load(); n != 1 {
				t.Errorf("%d attempts; want 1 (no retry can heal this)", n)
			}
		})
	}
}
