package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"
)

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
	if err != nil && cannotHeal(err) != "" {
		return false, nil
	}
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

// cannotHeal says what to fix when err is a transport error that no retry can cure (the configuration is
// wrong, not the network or the server's health), and "" otherwise. Retrying those only delays the answer.
func cannotHeal(err error) string {
	var dns *net.DNSError
	var record tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &record):
		return "the server does not speak TLS on that port (it answered in plain HTTP?): use http:// in --server, or the server's TLS port"
	case errors.As(err, &dns) && dns.IsNotFound:
		return fmt.Sprintf("the host %q does not resolve: check the host name in --server", dns.Name)
	case errors.As(err, &unknownCA):
		return "the server's certificate is signed by an authority this client does not trust: give that CA's certificate with --ca-cert (OCTO_CA_CERT)"
	case errors.As(err, &hostname):
		return fmt.Sprintf("the server's certificate is not valid for %s: use a host name it names in --server (%v)", hostname.Host, err)
	case errors.As(err, &invalid):
		return fmt.Sprintf("the server's certificate is not valid (%v): renew it, or check this machine's clock", invalid.Error())
	}
	return ""
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
		if fix := cannotHeal(err); fix != "" {
			return nil, fmt.Errorf("%s %s: %s: %w", method, path, fix, err)
		}
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
// do is call for the routes whose reply is one value: it returns the reply decoded as a T.
func do[T any](ctx context.Context, c *Client, policy int, method, path string, in any) (T, error) {
	var out T
	_, err := c.call(ctx, policy, method, path, in, &out)
	return out, err
}

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
