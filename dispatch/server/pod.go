package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/decode"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// The script pod's channel (PROTOCOL.md, "The script pod's channel"): a lease mints a pod token and a sealing
// key for the operation; the pod calls the /api/v1/pod/ routes with that token and nothing else.

// newPodCredentials returns a new pod token, its hash as the store keeps it, and a sealing key.
func newPodCredentials() (token, hash string, key []byte) {
	token = newToken(api.PodTokenPrefix)
	key = make([]byte, logline.KeySize)
	_, _ = rand.Read(key)
	return token, podTokenHash(token), key
}

// podTokenHash is the hex SHA-256 of a pod token (store.Queue.PodLease looks it up).
func podTokenHash(token string) string { return hex.EncodeToString(hashToken(token)) }

// podLease resolves the request's pod token to the lease it names: 401 when the token is unknown, its
// operation ended or its lease expired; 403 for an admin or worker token, which pod routes do not take.
func (s *Server) podLease(r *http.Request) (store.PodLease, error) {
	token := bearer(r)
	if token == "" {
		return store.PodLease{}, errf(http.StatusUnauthorized, "", "", "missing bearer token: pod routes take the pod token of the operation (its Secret's key pod-token)")
	}
	ctx := r.Context()
	pl, err := s.st.PodLease(ctx, podTokenHash(token))
	if errors.Is(err, store.ErrNotFound) {
		h := hashToken(token)
		if s.isAdmin(h) {
			return pl, errf(http.StatusForbidden, "", "", "pod routes take the pod token of an operation, not the admin token")
		}
		if _, werr := s.workerByHash(ctx, h); werr == nil {
			return pl, errf(http.StatusForbidden, "", "", "pod routes take the pod token of an operation, not a worker token")
		}
		return pl, errf(http.StatusUnauthorized, "", "", "invalid pod token: it is unknown, or its operation ended (a pod token works only while its operation's lease is live)")
	}
	if err != nil {
		return pl, err
	}
	if pl.ExpiresAt.Before(time.Now()) {
		return pl, errf(http.StatusUnauthorized, "", "", "the lease of operation %s expired: its pod token no longer works (the operation is lost)", pl.OperationID)
	}
	return pl, nil
}

// refusePodToken answers a pod token used on another route with 403 (nil when h is no live pod token).
func (s *Server) refusePodToken(ctx context.Context, h []byte) error {
	if _, err := s.st.PodLease(ctx, hex.EncodeToString(h)); err != nil {
		return nil
	}
	return errf(http.StatusForbidden, "", "", "a pod token may only call /api/v1/pod/...")
}

// podRef is the lease reference of a pod's calls: its operation's lease, as the worker holds it.
func podRef(pl *store.PodLease) store.LeaseRef {
	return store.LeaseRef{OperationID: pl.OperationID, LeaseID: pl.LeaseID, WorkerID: pl.WorkerID, Now: time.Now().UTC()}
}

func (s *Server) podLogState(w http.ResponseWriter, r *http.Request, c caller) error {
	writeJSON(w, http.StatusOK, api.PodLogState{LastSeq: c.pod.LastSeq, End: c.pod.End != nil})
	return nil
}

// podLogs stores records the pod pushes: it opens them with the operation's key, masks them and appends them
// through the worker's own append (idempotent on seq), and records the end-of-stream marker.
func (s *Server) podLogs(w http.ResponseWriter, r *http.Request, c caller) error {
	buf := logBody()
	defer keepLogBody(buf)
	if n := r.ContentLength; n > 0 && n <= logsBodyLimit {
		buf.Grow(int(n) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return fmt.Errorf("reading the request body: %w", err) // a *http.MaxBytesError stays visible
	}
	var req api.PodLogsRequest
	if err := decodePodLogs(buf.Bytes(), &req); err != nil {
		return err
	}
	if err := validate.PodLogs(&req); err != nil {
		return err
	}
	pl := c.pod
	sealer, err := logline.NewSealer(pl.SealingKey, pl.OperationID)
	if err != nil {
		return errf(http.StatusConflict, "", "", "the server holds no sealing key for operation %s (its worker made its own): this pod cannot push", pl.OperationID)
	}
	lines := make([]api.LogLine, 0, len(req.Records))
	var end *api.PodEnd
	var open []byte // scratch for opening the records
	for i, rec := range req.Records {
		var l logline.Line
		l, open, err = sealer.ParseTo(open, []byte(rec))
		if errors.Is(err, logline.ErrNotRecord) {
			return errf(http.StatusUnprocessableEntity, fmt.Sprintf("records[%d]", i), "", "not a runner record (seq|time|stream|sealed payload): push the records as the runner printed them")
		}
		if err != nil {
			return errf(http.StatusUnprocessableEntity, fmt.Sprintf("records[%d]", i), "", "%v", err)
		}
		if l.Stream == logline.EOS {
			code, err := l.ExitCode()
			if err != nil {
				return errf(http.StatusUnprocessableEntity, fmt.Sprintf("records[%d]", i), "", "%v", err)
			}
			end = &api.PodEnd{Seq: l.Seq, ExitCode: code}
			continue
		}
		if l.Seq < 1 {
			return errf(http.StatusUnprocessableEntity, fmt.Sprintf("records[%d]", i), "", "seq %d: runner lines count from 1", l.Seq)
		}
		lines = append(lines, api.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: wireText(l.Payload)})
	}
	if err := validate.AppendLogs(&api.AppendLogsRequest{LeaseID: pl.LeaseID, Lines: lines}); err != nil {
		return err
	}
	ref := podRef(pl)
	state := api.PodLogState{LastSeq: pl.LastSeq, End: pl.End != nil}
	if len(lines) > 0 {
		resp, err := s.appendLines(r.Context(), ref, lines)
		if err != nil {
			return err
		}
		state.LastSeq = resp.LastSeq
	}
	if end != nil {
		if err := s.st.SetPodEnd(r.Context(), ref, *end); err != nil {
			return err
		}
		state.End = true
	}
	writeJSON(w, http.StatusOK, state)
	return nil
}

// decodePodLogs decodes a pod's push: api.DecodePodLogs reads the pushes the runner sends without reflection;
// any body it does not fully understand goes to decode.Bytes, the strict decoder every request uses. When the
// fast path succeeds its result is what decode.Bytes would return (a differential fuzz test checks it).
func decodePodLogs(data []byte, req *api.PodLogsRequest) error {
	if api.DecodePodLogs(data, req, validate.MaxLogLines+1) {
		return nil
	}
	*req = api.PodLogsRequest{}
	return decode.Bytes(data, req)
}

// wireText is a payload as the worker's lines carry it: JSON strings hold valid UTF-8 only, and encoding/json
// writes each invalid byte as U+FFFD. A line pushed by the pod must be the very text the worker sends for the
// same seq, or the append would refuse it as a conflict.
func wireText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	enc, _ := json.Marshal(string(b))
	var s string
	_ = json.Unmarshal(enc, &s)
	return s
}
