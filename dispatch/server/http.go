package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/decode"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// Body limits per route (PROTOCOL.md lists them). The default applies to every route not named here. An
// operation may hold 900 KiB of script, files and variables, and files travel base64-encoded (4/3), so its
// route takes 2 MiB; a log batch may hold 4 MiB of text plus JSON escaping.
const (
	defaultBodyLimit    = 1 << 20
	operationBodyLimit  = 2 << 20
	deploymentBodyLimit = 16 << 20
	logsBodyLimit       = 10 << 20
	chartBodyLimit      = 10 << 20
)

// authKind says which token a route accepts.
type authKind int

const (
	authPublic        authKind = iota
	authAdmin                  // the admin token
	authRegistration           // a registration token
	authWorker                 // a worker token
	authWorkerOrAdmin          // a worker token or the admin token (chart downloads)
	authPod                    // the pod token of a live lease (the script pod's channel: pod.go)
)

// Token prefixes make a token's kind visible to a human; authentication never relies on them.
const (
	prefixAdmin        = "owa_"
	prefixRegistration = "owr_"
	prefixWorker       = "oww_"
)

// caller is who made a request.
type caller struct {
	admin     bool
	worker    *store.Worker
	tokenHash []byte // the worker token's hash
	token     *store.Token
	pod       *store.PodLease // the lease a pod token names
}

// route is one endpoint: the mux pattern, its auth, its handler, and what the OpenAPI document says of it.
type route struct {
	method, pattern string
	auth            authKind
	handle          func(w http.ResponseWriter, r *http.Request, c caller) error
	summary         string
	request         any      // JSON request body type, or nil
	rawRequest      string   // content type of a non-JSON body
	response        any      // JSON response type, or nil
	rawResponse     string   // content type of a non-JSON response
	status          int      // success status
	also            []int    // other documented statuses beyond the common ones
	query           []string // query parameters
	limit           int64    // body limit (defaultBodyLimit when 0)
	// stream marks a body that may take long to arrive (a package upload): its read deadline is renewed by
	// every read instead of bounding the whole body.
	stream bool
}

// httpError is an error with its HTTP status and api.Error body.
type httpError struct {
	status  int
	msg     string
	field   string
	code    string
	lastSeq int64
}

func (e *httpError) Error() string { return e.msg }

func errf(status int, field, code, format string, args ...any) *httpError {
	return &httpError{status: status, field: field, code: code, msg: fmt.Sprintf(format, args...)}
}

// wrap authenticates, limits the body, runs the handler and turns its error into a JSON reply.
func (s *Server) wrap(rt route) http.Handler {
	limit := rt.limit
	if limit == 0 {
		limit = defaultBodyLimit
	}
	readTimeout := s.cfg.BodyReadTimeout
	if limit > operationBodyLimit {
		readTimeout = s.cfg.LargeBodyReadTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = bodyDeadline(w, r.Body, readTimeout, rt.stream)
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		c, err := s.authenticate(r, rt.auth)
		if err == nil {
			err = rt.handle(w, r, c)
		}
		if err != nil {
			he := s.toHTTPError(r, err)
			writeError(w, he)
			entry := s.log.WithField("method", r.Method).WithField("path", r.URL.Path).WithField("status", he.status)
			if he.status >= 500 {
				entry.WithError(err).Error("request failed")
			} else {
				entry.WithField("error", he.msg).Debug("request refused")
			}
			return
		}
		s.log.WithField("method", r.Method).WithField("path", r.URL.Path).WithField("duration", time.Since(start)).Debug("request served")
	})
}

// bodyDeadline sets a deadline for reading body: a client that sends it slower than that gets a read error
// (answered 408, see toHTTPError) rather than holding its connection open. The deadline ends with the body, so
// that a long-poll or a log stream is not cut once its request has arrived.
func bodyDeadline(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration, idle bool) io.ReadCloser {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return body // not a connection that has deadlines (a test's recorder)
	}
	b := &deadlineBody{ReadCloser: body, rc: rc}
	if idle {
		b.idle = timeout
	}
	return b
}

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool          // the body was read to its end and the deadline lifted
	idle time.Duration // when set, each read may wait this long (a streamed body)
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.idle > 0 && !b.done {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// toHTTPError maps errors to statuses: decoding 400, validation 422, the store's sentinels as PROTOCOL.md says.
func (s *Server) toHTTPError(r *http.Request, err error) *httpError {
	var he *httpError
	var de *decode.Error
	var ve *validate.Error
	var mbe *http.MaxBytesError
	var missing *store.MissingLinesError
	var lost *store.LeaseLostError
	var conflict *store.LogConflictError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errf(http.StatusRequestTimeout, "", "", "the request body did not arrive within the server's limit: send it without pauses")
	case errors.As(err, &mbe):
		return errf(http.StatusRequestEntityTooLarge, "", api.CodeTooLarge,
			"the request body is larger than this endpoint's limit of %s; see PROTOCOL.md (Limits)", byteSize(mbe.Limit))
	case errors.As(err, &de):
		return errf(http.StatusBadRequest, de.Field, "", "%s", de.Message)
	case errors.As(err, &ve):
		return errf(http.StatusUnprocessableEntity, ve.Field, ve.Code, "%s", ve.Message)
	case errors.As(err, &missing):
		e := errf(http.StatusConflict, "last_seq", api.CodeMissingLines, "%s", missing.Error())
		e.lastSeq = missing.Have
		return e
	case errors.As(err, &conflict):
		return errf(http.StatusConflict, fmt.Sprintf("lines[%d].text", conflict.Index), api.CodeLogConflict, "%s", conflict.Error())
	case errors.As(err, &lost):
		return errf(http.StatusGone, "", api.CodeLeaseLost, "%s", lost.Error())
	case errors.Is(err, store.ErrNotLeased):
		return errf(http.StatusForbidden, "lease_id", api.CodeNotLeased, "this operation is not leased to this worker under that lease id")
	case errors.Is(err, store.ErrNotFound):
		return errf(http.StatusNotFound, "", "", "%s", trimStore(err))
	case errors.Is(err, store.ErrExists):
		return errf(http.StatusConflict, "", api.CodeExists, "%s", trimStore(err))
	case errors.Is(err, store.ErrFinished):
		return errf(http.StatusConflict, "", api.CodeAlreadyFinished, "%s: nothing to cancel", trimStore(err))
	case errors.Is(err, store.ErrInvalid):
		return errf(http.StatusUnprocessableEntity, "", "", "%s", trimStore(err))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return errf(http.StatusServiceUnavailable, "", "", "the request was cancelled (client gone or server shutting down)")
	}
	return errf(http.StatusInternalServerError, "", "", "internal error; the server log has the details")
}

// trimStore shortens a wrapped store error to its first phrase for the user.
func trimStore(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"enqueueing operation: ", "enqueueing deployment: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func writeError(w http.ResponseWriter, e *httpError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="octo-worker"`)
	}
	writeJSON(w, e.status, api.Error{Error: e.msg, Field: e.field, Code: e.code, LastSeq: e.lastSeq})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// recoverer turns a handler panic into a 500 and a log entry instead of a dropped connection.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.WithField("panic", v).WithField("stack", string(debug.Stack())).Error("handler panicked")
				writeError(w, errf(http.StatusInternalServerError, "", "", "internal error; the server log has the details"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// ---- tokens and authentication ----

// newToken returns a random token with a kind prefix: 32 bytes from crypto/rand, so a SHA-256 of it is a
// safe thing to store (no salt or slow hash needed for a secret nobody chose).
func newToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// newID returns a random id with a prefix; ids end up in Kubernetes labels, so they stay short and plain.
func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

const adminTokenSetting = "admin_token_sha256"

// InitAdminToken sets up the admin token. A non-empty token (from --admin-token / OCTO_TOKEN) becomes the
// admin token; otherwise the stored one is kept, and on first start a new one is generated and returned so
// the caller can print it once. Only its SHA-256 is stored.
func (s *Server) InitAdminToken(ctx context.Context, token string) (generated string, err error) {
	if token != "" {
		if len(token) < 16 {
			return "", errors.New("the admin token must be at least 16 characters; leave it unset to have one generated")
		}
		if err := s.st.SetSetting(ctx, adminTokenSetting, hex.EncodeToString(hashToken(token))); err != nil {
			return "", fmt.Errorf("storing the admin token hash: %w", err)
		}
		s.setAdminHash(hashToken(token))
		return "", nil
	}
	stored, err := s.st.Setting(ctx, adminTokenSetting)
	switch {
	case err == nil:
		h, derr := hex.DecodeString(stored)
		if derr != nil || len(h) != sha256.Size {
			return "", fmt.Errorf("the stored admin token hash is corrupt; start once with --admin-token to replace it")
		}
		s.setAdminHash(h)
		return "", nil
	case errors.Is(err, store.ErrNotFound):
		token = newToken(prefixAdmin)
		if err := s.st.SetSetting(ctx, adminTokenSetting, hex.EncodeToString(hashToken(token))); err != nil {
			return "", fmt.Errorf("storing the admin token hash: %w", err)
		}
		s.setAdminHash(hashToken(token))
		return token, nil
	default:
		return "", fmt.Errorf("reading the admin token hash: %w", err)
	}
}

func (s *Server) setAdminHash(h []byte) {
	s.adminMu.Lock()
	s.adminHash = h
	s.adminMu.Unlock()
}

func (s *Server) isAdmin(h []byte) bool {
	s.adminMu.RLock()
	defer s.adminMu.RUnlock()
	return len(s.adminHash) == len(h) && subtle.ConstantTimeCompare(s.adminHash, h) == 1
}

func bearer(r *http.Request) string {
	const p = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):])
	}
	return ""
}

// authenticate checks the bearer token against what the route accepts.
func (s *Server) authenticate(r *http.Request, kind authKind) (caller, error) {
	if kind == authPublic {
		return caller{}, nil
	}
	if kind == authPod {
		pl, err := s.podLease(r)
		if err != nil {
			return caller{}, err
		}
		return caller{pod: &pl}, nil
	}
	token := bearer(r)
	if token == "" {
		return caller{}, errf(http.StatusUnauthorized, "", "", "missing bearer token: send Authorization: Bearer <token> (the CLI takes --token or OCTO_TOKEN)")
	}
	h := hashToken(token)
	ctx := r.Context()
	admin := s.isAdmin(h)
	switch kind {
	case authAdmin:
		if admin {
			return caller{admin: true}, nil
		}
		if _, err := s.st.WorkerByTokenHash(ctx, h); err == nil {
			return caller{}, errf(http.StatusForbidden, "", "", "this endpoint needs the admin token; a worker token may only call /api/v1/worker/... and chart downloads")
		}
		if _, err := s.st.TokenByHash(ctx, h); err == nil {
			return caller{}, errf(http.StatusForbidden, "", "", "this endpoint needs the admin token; a registration token may only call POST /api/v1/worker/register")
		}
		if err := s.refusePodToken(ctx, h); err != nil {
			return caller{}, err
		}
		return caller{}, errf(http.StatusUnauthorized, "", "", "invalid token: use the admin token printed at the server's first start (or given with --admin-token)")
	case authRegistration:
		t, err := s.st.TokenByHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			if admin {
				return caller{}, errf(http.StatusForbidden, "", "", "registering needs a registration token, not the admin token: create one with `octo-worker token create --pool P`")
			}
			if err := s.refusePodToken(ctx, h); err != nil {
				return caller{}, err
			}
			return caller{}, errf(http.StatusUnauthorized, "", "", "invalid registration token: create one with `octo-worker token create --pool P`")
		}
		if err != nil {
			return caller{}, err
		}
		now := time.Now()
		if t.RevokedAt != nil {
			return caller{}, errf(http.StatusUnauthorized, "", "", "registration token %s was revoked at %s: create a new one with `octo-worker token create`", t.ID, t.RevokedAt.Format(time.RFC3339))
		}
		if !now.Before(t.ExpiresAt) {
			return caller{}, errf(http.StatusUnauthorized, "", "", "registration token %s expired at %s: create a new one with `octo-worker token create`", t.ID, t.ExpiresAt.Format(time.RFC3339))
		}
		return caller{token: &t}, nil
	case authWorker, authWorkerOrAdmin:
		if admin {
			if kind == authWorkerOrAdmin {
				return caller{admin: true}, nil
			}
			return caller{}, errf(http.StatusForbidden, "", "", "worker endpoints need a worker token (from POST /api/v1/worker/register), not the admin token")
		}
		w, err := s.workerByHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			if err := s.refusePodToken(ctx, h); err != nil {
				return caller{}, err
			}
			return caller{}, errf(http.StatusUnauthorized, "", "", "invalid worker token: it is unknown, or its worker was removed; register again with a registration token")
		}
		if err != nil {
			return caller{}, err
		}
		return caller{worker: &w, tokenHash: h}, nil
	}
	return caller{}, errf(http.StatusInternalServerError, "", "", "route has an unknown auth kind")
}

// body decodes the JSON request body strictly into v and validates it with check (when not nil).
func body[T any](r *http.Request, v *T, check func(*T) error) error {
	if err := decode.Reader(r.Body, v); err != nil {
		return err // a *http.MaxBytesError stays visible through the wrapping
	}
	if check != nil {
		return check(v)
	}
	return nil
}
