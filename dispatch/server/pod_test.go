package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// podClient is a client of the pod routes with token.
func (b *bundle) podClient(token string) *client.Pod {
	b.t.Helper()
	p, err := client.NewPod(b.url, token, client.Config{RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond})
	if err != nil {
		b.t.Fatal(err)
	}
	return p
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	e, ok := api.AsStatusError(err)
	if !ok || e.Status != status {
		t.Errorf("%s: error = %v, want status %d", what, err, status)
	}
}

// TestPodTokenScope: every lease (a claim and a hand-off alike) carries a pod token and a sealing key; the token
// reads only its own operation's log state, only while its lease is live, and works nowhere else; admin and
// worker tokens are refused on pod routes.
func TestPodTokenScope(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	a := b.submit(api.OperationSpec{Pool: "p"})
	la := b.lease(w)
	// The second lease is a hand-off to a waiting poll.
	got := make(chan *api.Lease, 1)
	go func() {
		l, err := w.Lease(b.ctx, 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	b.waitAsleep("the worker to wait", func(n int) bool { return n == 1 })
	bop := b.submit(api.OperationSpec{Pool: "p"})
	lb := <-got
	if la.Operation.ID != a.ID || lb == nil || lb.Operation.ID != bop.ID {
		t.Fatalf("leases = %+v, %+v", la, lb)
	}
	for _, l := range []*api.Lease{la, lb} {
		if !strings.HasPrefix(l.PodToken, api.PodTokenPrefix) || len(l.PodToken) != len(api.PodTokenPrefix)+43 || len(l.SealingKey) != 32 {
			t.Errorf("lease of %s: pod token %q, sealing key of %d bytes", l.Operation.ID, l.PodToken, len(l.SealingKey))
		}
	}
	if la.PodToken == lb.PodToken {
		t.Error("two leases carry the same pod token")
	}
	listed, err := w.Leases(b.ctx)
	if err != nil || len(listed) != 2 || listed[0].PodToken != "" || listed[0].SealingKey != nil {
		t.Errorf("Leases = %+v, %v: the listing must not repeat tokens or keys", listed, err)
	}

	podA, podB := b.podClient(la.PodToken), b.podClient(lb.PodToken)
	if _, err := w.AppendLogs(b.ctx, a.ID, la.LeaseID, []api.LogLine{line(1, "a1"), line(2, "a2")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pod  *client.Pod
		want int64
	}{{podA, 2}, {podB, 0}} {
		st, err := c.pod.LogState(b.ctx)
		if err != nil || st.LastSeq != c.want {
			t.Errorf("LogState = %+v, %v; want last_seq %d (its own operation's)", st, err, c.want)
		}
	}

	// Other tokens on pod routes, and the pod token on other routes.
	_, err = b.podClient(adminToken).LogState(b.ctx)
	wantStatus(t, "admin token on a pod route", err, http.StatusForbidden)
	wt, _ := b.register("w2", []string{"p"})
	_, err = b.podClient(wt).LogState(b.ctx)
	wantStatus(t, "worker token on a pod route", err, http.StatusForbidden)
	_, err = b.podClient(api.PodTokenPrefix + "forged").LogState(b.ctx)
	wantStatus(t, "unknown pod token", err, http.StatusUnauthorized)
	asPod := b.client(la.PodToken)
	_, err = asPod.Operation(b.ctx, a.ID)
	wantStatus(t, "pod token on an admin route", err, http.StatusForbidden)
	_, err = asPod.Leases(b.ctx)
	wantStatus(t, "pod token on a worker route", err, http.StatusForbidden)
	_, err = asPod.AppendLogs(b.ctx, a.ID, la.LeaseID, []api.LogLine{line(3, "a3")})
	wantStatus(t, "pod token appending as the worker", err, http.StatusForbidden)
	_, err = asPod.Register(b.ctx, api.RegisterRequest{Name: "x", Version: "1", Capacity: 1})
	wantStatus(t, "pod token registering", err, http.StatusForbidden)

	// The token dies with its operation.
	if _, err := w.Result(b.ctx, a.ID, api.ResultRequest{LeaseID: la.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 2}); err != nil {
		t.Fatal(err)
	}
	_, err = podA.LogState(b.ctx)
	wantStatus(t, "the pod token of an ended operation", err, http.StatusUnauthorized)
	if _, err := podB.LogState(b.ctx); err != nil {
		t.Errorf("the other operation's pod token: %v", err)
	}
}

// TestPodTokenDiesWithExpiredLease: a pod token stops working when its lease expires.
func TestPodTokenDiesWithExpiredLease(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LeaseTTL: time.Second, HeartbeatInterval: 200 * time.Millisecond, PollInterval: time.Hour})
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	pod := b.podClient(l.PodToken)
	if _, err := pod.LogState(b.ctx); err != nil {
		t.Fatalf("LogState while leased: %v", err)
	}
	b.waitOp("the lease to expire", op.ID, func(op api.Operation) bool { return op.State == api.StateLost })
	_, err := pod.LogState(b.ctx)
	wantStatus(t, "the pod token of a lost operation", err, http.StatusUnauthorized)
}

// sealed returns the records a runner with key prints for lines of operation id (seq from 1), and the
// marker with code last when code >= 0.
func sealed(t *testing.T, key []byte, id string, code int, texts ...string) []string {
	t.Helper()
	s, err := logline.NewSealer(key, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	add := func(l logline.Line) {
		b, err := s.Append(nil, l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	for i, text := range texts {
		add(logline.Line{Seq: int64(i + 1), Time: time.Now(), Stream: logline.Stdout, Payload: []byte(text)})
	}
	if code >= 0 {
		add(logline.Line{Seq: int64(len(texts)), Time: time.Now(), Stream: logline.EOS, Payload: []byte(strconv.Itoa(code))})
	}
	return out
}

// TestPodPush: pushed records are opened with the operation's key, masked, and stored through the worker's own
// idempotent append: a line both send is stored once (the worker's text, invalid UTF-8 included, is the
// pod's), another text under a stored seq is a conflict, and the marker reaches the worker. Records of
// another operation, or not records at all, are refused.
func TestPodPush(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p", Variables: []api.Variable{{Name: "PW", Value: "hunter2", Sensitive: true}}})
	l := b.lease(w)
	other := b.submit(api.OperationSpec{Pool: "p"})
	lo := b.lease(w)
	pod := b.podClient(l.PodToken)
	texts := []string{"one", "the password is hunter2", "bad \xff byte", "four"}
	recs := sealed(t, l.SealingKey, op.ID, 7, texts...)

	// The worker delivered lines 1 and 3 (its client sends what encoding/json makes of them).
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, texts[0]), line(3, texts[2])}); err != nil {
		t.Fatal(err)
	}
	st, err := pod.PushLogs(b.ctx, recs)
	if err != nil || st.LastSeq != 4 || !st.End {
		t.Fatalf("PushLogs = %+v, %v; want last_seq 4 and the end", st, err)
	}
	if st, err := pod.PushLogs(b.ctx, recs[:2]); err != nil || st.LastSeq != 4 {
		t.Errorf("a repeated push = %+v, %v", st, err)
	}
	var got []string
	if _, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(ll api.LogLine) error {
		got = append(got, fmt.Sprintf("%d %s %s", ll.Seq, ll.Stream, ll.Text))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"1 stdout one", "3 stdout bad \uFFFD byte", "2 stdout the password is ********", "4 stdout four"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored lines (-want +got):\n%s", diff)
	}
	resp, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, nil)
	if err != nil || resp.LastSeq != 4 || resp.PodEnd == nil || *resp.PodEnd != (api.PodEnd{Seq: 4, ExitCode: 7}) {
		t.Errorf("the worker asks: %+v, %v; want last_seq 4 and the pod's end (4, exit 7)", resp, err)
	}
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(4, "not four")}); client.Code(err) != api.CodeLogConflict {
		t.Errorf("the worker sends another text under a pushed seq: %v, want log_conflict", err)
	}

	// Refused: another operation's records (sealed for op, pushed with other's token), and non-records.
	_, err = b.podClient(lo.PodToken).PushLogs(b.ctx, recs[:1])
	wantStatus(t, "records of another operation", err, http.StatusUnprocessableEntity)
	_, err = pod.PushLogs(b.ctx, []string{"hello"})
	wantStatus(t, "not a record", err, http.StatusUnprocessableEntity)
	if st, err := b.podClient(lo.PodToken).LogState(b.ctx); err != nil || st.LastSeq != 0 || st.End {
		t.Errorf("the other operation's log = %+v, %v; want it untouched", st, err)
	}
	_ = other
}
