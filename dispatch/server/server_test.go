package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func TestRegisterLeaseLogsResult(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("web")
	w, wid := b.worker("worker-1", []string{"web"}, "kubernetes-job")
	op := b.submit(api.OperationSpec{Name: "hello", Pool: "web", Script: "echo hi", Image: "alpine:3.20"})
	if op.State != api.StateQueued || op.Syntax != "bash" || !strings.HasPrefix(op.ID, "op-") {
		t.Fatalf("submitted = %+v", op)
	}
	l := b.lease(w)
	if l.Operation.ID != op.ID || l.Operation.WorkerID != wid || l.Operation.Script != "echo hi" || l.LastSeq != 0 {
		t.Fatalf("lease = %+v", l)
	}
	if time.Until(l.ExpiresAt) <= 0 {
		t.Errorf("lease already expired at %s", l.ExpiresAt)
	}
	if got, err := w.SetRunning(b.ctx, op.ID, l.LeaseID, "job created"); err != nil || got.State != api.StateRunning {
		t.Fatalf("SetRunning = %+v, %v", got, err)
	}
	resp, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "hi"), line(2, "there")})
	if err != nil || resp != (api.AppendLogsResponse{LastSeq: 2}) {
		t.Fatalf("AppendLogs = %+v, %v", resp, err)
	}
	done, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 2})
	if err != nil || done.State != api.StateSucceeded || *done.ExitCode != 0 {
		t.Fatalf("Result = %+v, %v", done, err)
	}
	var texts []string
	end, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error { texts = append(texts, l.Text); return nil })
	if err != nil || end == nil || end.State != api.StateSucceeded || *end.ExitCode != 0 {
		t.Fatalf("Logs end = %+v, %v", end, err)
	}
	if diff := cmp.Diff([]string{"hi", "there"}, texts); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
	ws, err := b.admin.Workers(b.ctx)
	if err != nil || len(ws) != 1 || ws[0].ID != wid || !ws[0].Healthy || ws[0].Name != "worker-1" {
		t.Errorf("Workers = %+v, %v", ws, err)
	}
}

// TestLongPollWakesAtOnce: an operation submitted while a worker waits reaches it through the wake-up, not
// the safety re-check (set to an hour here), and long before the poll's 30 s end.
func TestLongPollWakesAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	b.pool("q")
	w, _ := b.worker("w", []string{"p"})
	got := make(chan *api.Lease, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := w.Lease(b.ctx, 30*time.Second)
		errc <- err
		got <- l
	}()
	b.waitAsleep("the worker to wait", func(n int) bool { return n == 1 })
	b.submit(api.OperationSpec{Pool: "q"}) // another pool: must not wake it
	op := b.submit(api.OperationSpec{Pool: "p"})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if l := <-got; l == nil || l.Operation.ID != op.ID {
		t.Fatalf("long-poll got %+v, want %s", l, op.ID)
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	l, err := w.Lease(b.ctx, time.Second)
	if err != nil || l != nil {
		t.Fatalf("Lease on an empty queue = %+v, %v; want nothing", l, err)
	}
}

// TestLeaseRetryAfterLostReply drops the reply of the first lease call at the transport (the request reached
// the server): the client's retry carries the same request id and gets the same lease; nothing is leased twice.
func TestLeaseRetryAfterLostReply(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	_, _ = b.worker("w0", []string{"p"}) // make a token
	tok, _ := b.admin.CreateToken(b.ctx, []string{"p"}, 0)
	reg, err := b.client(tok.Token).Register(b.ctx, api.RegisterRequest{Name: "flaky", Version: "1", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	tr := &dropFirstReply{next: http.DefaultTransport, path: "/api/v1/worker/lease"}
	flaky, err := client.New(client.Config{Server: b.url, Token: reg.WorkerToken, HTTPClient: &http.Client{Transport: tr},
		RetryWaitMin: time.Millisecond, RetryWaitMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a := b.submit(api.OperationSpec{Pool: "p"})
	second := b.submit(api.OperationSpec{Pool: "p"})
	l, err := flaky.Lease(b.ctx, 0)
	if err != nil || l == nil || l.Operation.ID != a.ID {
		t.Fatalf("Lease through a lost reply = %+v, %v; want %s", l, err, a.ID)
	}
	if tr.calls() < 2 {
		t.Fatalf("the transport saw %d lease calls; the test needs a retry", tr.calls())
	}
	if op := b.op(second.ID); op.State != api.StateQueued {
		t.Errorf("the retry leased a second operation: %s is %s", second.ID, op.State)
	}
	leases, err := flaky.Leases(b.ctx)
	if err != nil || len(leases) != 1 || leases[0].LeaseID != l.LeaseID {
		t.Errorf("worker holds %+v, %v; want exactly the one lease", leases, err)
	}
}

// dropFirstReply lets the first request to path reach the server, then loses its reply.
type dropFirstReply struct {
	next http.RoundTripper
	path string
	mu   sync.Mutex
	n    int
}

func (d *dropFirstReply) calls() int { d.mu.Lock(); defer d.mu.Unlock(); return d.n }

func (d *dropFirstReply) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(r)
	if r.URL.Path != d.path {
		return resp, err
	}
	d.mu.Lock()
	d.n++
	first := d.n == 1
	d.mu.Unlock()
	if first && err == nil {
		resp.Body.Close()
		return nil, errors.New("connection reset by peer (injected)")
	}
	return resp, err
}

func TestLogsIdempotentAndGaps(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	steps := []struct {
		lines []api.LogLine
		want  api.AppendLogsResponse
	}{
		{[]api.LogLine{line(1, "a"), line(2, "b")}, api.AppendLogsResponse{LastSeq: 2}},
		{[]api.LogLine{line(1, "a"), line(2, "b")}, api.AppendLogsResponse{LastSeq: 2}}, // a retry
		{[]api.LogLine{line(4, "d")}, api.AppendLogsResponse{LastSeq: 2, Gap: true}},    // 3 missing
		{[]api.LogLine{{Seq: 0, Stream: "system", Text: "pod scheduled"}}, api.AppendLogsResponse{LastSeq: 2, Gap: true}},
		{[]api.LogLine{line(3, "c"), line(4, "d")}, api.AppendLogsResponse{LastSeq: 4}},
	}
	for i, st := range steps {
		got, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, st.lines)
		if err != nil || got != st.want {
			t.Fatalf("step %d: AppendLogs = %+v, %v; want %+v", i, got, err, st.want)
		}
	}
	// The result is refused while lines are missing, with what the server holds.
	op2 := b.submit(api.OperationSpec{Pool: "p"})
	l2 := b.lease(w)
	if _, err := w.AppendLogs(b.ctx, op2.ID, l2.LeaseID, []api.LogLine{line(1, "x"), line(3, "z")}); err != nil {
		t.Fatal(err)
	}
	_, err := w.Result(b.ctx, op2.ID, api.ResultRequest{LeaseID: l2.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 3})
	if have, ok := api.MissingLines(err); !ok || have != 1 {
		t.Fatalf("result with a gap: error = %v, want missing_lines with last_seq 1", err)
	}
	if _, err := w.AppendLogs(b.ctx, op2.ID, l2.LeaseID, []api.LogLine{line(2, "y")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Result(b.ctx, op2.ID, api.ResultRequest{LeaseID: l2.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 3}); err != nil {
		t.Fatalf("result after re-sending: %v", err)
	}

	var got []string
	_, err = b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error {
		got = append(got, fmt.Sprintf("%d:%s", l.Seq, l.Text))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Stored in arrival order, each seq once; the worker's note (seq 0) where it came.
	if diff := cmp.Diff([]string{"1:a", "2:b", "4:d", "0:pod scheduled", "3:c"}, got); diff != "" {
		t.Errorf("stored log (-want +got):\n%s", diff)
	}
}

func TestFollowLogsStreamsAndResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "first")}); err != nil {
		t.Fatal(err)
	}
	lines := make(chan api.LogLine, 100)
	type result struct {
		end *api.LogEnd
		err error
	}
	res := make(chan result, 1)
	go func() {
		end, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{Follow: true}, func(l api.LogLine) error { lines <- l; return nil })
		res <- result{end, err}
	}()
	if first := <-lines; first.Text != "first" {
		t.Fatalf("first streamed line = %+v", first)
	}
	// Lines appended while the follower waits arrive without a poll tick (the re-check is an hour here).
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(2, "second")}); err != nil {
		t.Fatal(err)
	}
	second := <-lines
	if second.Text != "second" {
		t.Fatalf("second streamed line = %+v", second)
	}
	if _, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateFailed, ExitCode: intp(3), LastSeq: 2}); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.end == nil || r.end.State != api.StateFailed || *r.end.ExitCode != 3 {
		t.Fatalf("follow ended with %+v, %v; want failed with exit code 3", r.end, r.err)
	}
	// Resuming after the first line's position returns only what follows.
	var rest []string
	end, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{After: second.Pos - 1, Follow: true}, func(l api.LogLine) error {
		rest = append(rest, l.Text)
		return nil
	})
	if err != nil || end == nil || !cmp.Equal(rest, []string{"second"}) {
		t.Errorf("resumed follow = %q, %+v, %v", rest, end, err)
	}
}

func TestMasking(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	const secret = "s3cr3t-P4ss"
	op := b.submit(api.OperationSpec{Pool: "p", Variables: []api.Variable{
		{Name: "USER", Value: "deployer"}, {Name: "PASSWORD", Value: secret, Sensitive: true},
		{Name: "CERT", Value: "-----BEGIN-----\nline-of-key\n-----END-----", Sensitive: true}}})
	if op.Variables[1].Value != mask.Placeholder || op.Variables[0].Value != "deployer" {
		t.Errorf("submit reply shows variables %+v", op.Variables)
	}
	l := b.lease(w)
	if l.Operation.Variables[1].Value != secret {
		t.Fatalf("the lease must carry the value in clear for the script, got %q", l.Operation.Variables[1].Value)
	}
	if _, err := w.SetRunning(b.ctx, op.ID, l.LeaseID, "starting with "+secret); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "password is "+secret+"!"),
		line(2, "key: line-of-key"), {Seq: 0, Stream: "system", Text: "env PASSWORD=" + secret}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateFailed, ExitCode: intp(1),
		LastSeq: 2, Message: "failed near " + secret}); err != nil {
		t.Fatal(err)
	}
	var texts []string
	end, err := b.admin.Logs(b.ctx, op.ID, client.LogsOptions{}, func(l api.LogLine) error { texts = append(texts, l.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"password is ********!", "key: ********", "env PASSWORD=********"}
	if diff := cmp.Diff(want, texts); diff != "" {
		t.Errorf("stored log (-want +got):\n%s", diff)
	}
	got := b.op(op.ID)
	if strings.Contains(got.Message, secret) || strings.Contains(end.Message, secret) || got.Variables[1].Value != mask.Placeholder {
		t.Errorf("operation shows the secret: message %q, end %q, variables %+v", got.Message, end.Message, got.Variables)
	}
	if values, err := b.st.SensitiveValues(b.ctx, op.ID); err != nil || len(values) != 0 {
		t.Errorf("after the end the store still holds %d sensitive values, %v", len(values), err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	queued := b.submit(api.OperationSpec{Pool: "p"})
	if got, err := b.admin.Cancel(b.ctx, queued.ID); err != nil || got.State != api.StateCancelled {
		t.Fatalf("cancel queued = %+v, %v", got, err)
	}
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Fatalf("a cancelled operation was leased: %+v, %v", l, err)
	}
	running := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	got, err := b.admin.Cancel(b.ctx, running.ID)
	if err != nil || got.State != api.StateLeased || !got.CancelRequested {
		t.Fatalf("cancel leased = %+v, %v", got, err)
	}
	hb, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Running: []string{running.ID}, Health: api.Health{OK: true}})
	if err != nil || !cmp.Equal(hb.Cancel, []string{running.ID}) || hb.HeartbeatSeconds != 5 || hb.LeaseTTL != 120 {
		t.Fatalf("heartbeat = %+v, %v; want the operation to cancel", hb, err)
	}
	if _, err := w.Result(b.ctx, running.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateCancelled, Message: "deleted the Job"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.admin.Cancel(b.ctx, running.ID)
	if client.Code(err) != api.CodeAlreadyFinished {
		t.Errorf("cancel of a finished operation: error = %v, want already_finished", err)
	}
}

func TestDeploymentStepOrderAndStopOnFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("web")
	b.pool("db")
	w, _ := b.worker("w", []string{"web", "db"})
	d, err := b.admin.Deploy(b.ctx, api.DeploymentSpec{Name: "release 42", Pool: "web", Steps: []api.OperationSpec{
		{Name: "migrate", Pool: "db", Script: "migrate"}, {Name: "deploy", Script: "deploy"}, {Name: "smoke", Script: "smoke"}, {Name: "notify", Script: "notify"}}})
	if err != nil {
		t.Fatal(err)
	}
	if d.State != api.StateQueued || len(d.Operations) != 4 || d.Operations[0].Pool != "db" || d.Operations[1].Pool != "web" {
		t.Fatalf("deployment = %+v", d)
	}
	// A long-poll started now must get step 1, then nothing until step 1 ends.
	for i, exit := range []int{0, 0, 2} {
		l := b.lease(w)
		if l.Operation.ID != d.Operations[i].ID || l.Operation.Step != i+1 {
			t.Fatalf("leased %s (step %d), want step %d", l.Operation.ID, l.Operation.Step, i+1)
		}
		if other, err := w.Lease(b.ctx, 0); err != nil || other != nil {
			t.Fatalf("step %d: the next step was leasable early: %+v, %v", i+1, other, err)
		}
		state := api.StateSucceeded
		if exit != 0 {
			state = api.StateFailed
		}
		if _, err := w.Result(b.ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: state, ExitCode: intp(exit)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.admin.Deployment(b.ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	var states []api.State
	for _, op := range got.Operations {
		states = append(states, op.State)
	}
	if got.State != api.StateFailed || !cmp.Equal(states, []api.State{api.StateSucceeded, api.StateSucceeded, api.StateFailed, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [succeeded succeeded failed cancelled]", got.State, states)
	}
	if msg := got.Operations[3].Message; msg != "not run: step 3 (smoke) ended failed" {
		t.Errorf("step 4 message = %q", msg)
	}
}

// TestDeploymentNextStepWakesWaiter: a worker waiting in a long-poll gets the next step as soon as the
// previous one succeeds.
func TestDeploymentNextStepWakesWaiter(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w1, _ := b.worker("w1", []string{"p"})
	w2, _ := b.worker("w2", []string{"p"})
	d, err := b.admin.Deploy(b.ctx, api.DeploymentSpec{Name: "two", Pool: "p", Steps: []api.OperationSpec{{Script: "a"}, {Script: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	l1 := b.lease(w1)
	got := make(chan *api.Lease, 1)
	go func() {
		l, _ := w2.Lease(b.ctx, 30*time.Second)
		got <- l
	}()
	b.waitAsleep("w2 to wait", func(n int) bool { return n == 1 })
	if _, err := w1.Result(b.ctx, l1.Operation.ID, api.ResultRequest{LeaseID: l1.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
		t.Fatal(err)
	}
	if l2 := <-got; l2 == nil || l2.Operation.ID != d.Operations[1].ID {
		t.Fatalf("waiting worker got %+v, want step 2", l2)
	}
}

func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{LeaseTTL: 3 * time.Second, HeartbeatInterval: 200 * time.Millisecond, PollInterval: time.Hour})
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	// A worker gets work only within three heartbeat intervals (600 ms here) of its last heartbeat.
	alive := func() {
		t.Helper()
		if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1", Capacity: 4, Health: api.Health{OK: true}}); err != nil {
			t.Fatal(err)
		}
	}
	abandoned := b.submit(api.OperationSpec{Pool: "p"})
	alive()
	la := b.lease(w)
	kept := b.submit(api.OperationSpec{Pool: "p"})
	alive()
	lk := b.lease(w)
	// Heartbeat for kept only, until abandoned is lost.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1", Capacity: 1, Running: []string{kept.ID}, Health: api.Health{OK: true}}); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	b.waitOp("the abandoned operation to be lost", abandoned.ID, func(op api.Operation) bool { return op.State == api.StateLost })
	close(stop)
	wg.Wait()
	if st := b.op(kept.ID).State; st != api.StateLeased {
		t.Errorf("the heartbeated operation is %s, want leased", st)
	}
	lost := b.op(abandoned.ID)
	if !strings.Contains(lost.Message, "not run again") || lost.FinishedAt == nil {
		t.Errorf("lost operation = %+v", lost)
	}
	// The worker that comes back is told its lease is gone, and to stop the operation.
	_, err := w.AppendLogs(b.ctx, abandoned.ID, la.LeaseID, []api.LogLine{line(1, "late")})
	if !api.IsLeaseLost(err) {
		t.Errorf("logs on a lost operation: error = %v, want lease_lost", err)
	}
	hb, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1", Capacity: 1, Running: []string{abandoned.ID, kept.ID}})
	if err != nil || !cmp.Equal(hb.Cancel, []string{abandoned.ID}) {
		t.Errorf("heartbeat = %+v, %v; want the lost operation cancelled", hb, err)
	}
	// A lost operation is never leased again.
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Errorf("after expiry Lease = %+v, %v; want nothing", l, err)
	}
	_ = lk
}

func TestDrainAndDesiredVersion(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	chart := append([]byte{0x1f, 0x8b}, []byte("not really a chart, but gzip magic")...)
	c, err := b.admin.UploadChart(b.ctx, "1.2.0", chart)
	if err != nil || c.Size != int64(len(chart)) {
		t.Fatalf("UploadChart = %+v, %v", c, err)
	}
	if _, err := b.admin.SetDesiredVersion(b.ctx, "9.9.9"); client.Code(err) != "" && !strings.Contains(err.Error(), "upload it first") {
		t.Errorf("desired version without a chart: %v", err)
	} else if err == nil {
		t.Error("desired version without a chart was accepted")
	}
	if _, err := b.admin.SetDesiredVersion(b.ctx, "1.2.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.DrainWorker(b.ctx, wid, true); err != nil {
		t.Fatal(err)
	}
	hb, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 1, Health: api.Health{OK: true}})
	if err != nil || !hb.Drain || hb.DesiredVersion != "1.2.0" || hb.ChartSHA256 != c.SHA256 {
		t.Fatalf("heartbeat = %+v, %v", hb, err)
	}
	data, err := w.DownloadChart(b.ctx, hb.ChartURL, hb.ChartSHA256)
	if err != nil || string(data) != string(chart) {
		t.Fatalf("DownloadChart = %d bytes, %v", len(data), err)
	}
	if _, err := w.DownloadChart(b.ctx, hb.ChartURL, strings.Repeat("0", 64)); err == nil {
		t.Error("a chart with the wrong digest was accepted")
	}
	// A draining worker is given nothing.
	b.submit(api.OperationSpec{Pool: "p"})
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Errorf("a draining worker leased %+v, %v", l, err)
	}
	if _, err := b.admin.DrainWorker(b.ctx, wid, false); err != nil {
		t.Fatal(err)
	}
	b.lease(w)
}

// TestConcurrentWorkersLeaseEachOnce: 8 workers long-poll while 2,000 operations are submitted; every
// operation is leased exactly once and ends succeeded.
func TestConcurrentWorkersLeaseEachOnce(t *testing.T) {
	t.Parallel()
	const workers, ops = 8, 2000
	// The workers do not heartbeat: a window of hours keeps them available however long the run takes (under
	// -race on a loaded machine, longer than the default 15 s).
	cfg := testConfig()
	cfg.HeartbeatInterval, cfg.LeaseTTL = time.Hour, 2*time.Hour
	b := setup(t, cfg)
	b.pool("p")
	var mu sync.Mutex
	leasedBy := map[string]string{}
	var dup []string
	finished := 0
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range workers {
		w, wid := b.worker(fmt.Sprintf("w%d", i), []string{"p"})
		wg.Go(func() {
			for ctx.Err() == nil {
				l, err := w.Lease(ctx, 5*time.Second)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Lease: %v", err)
					}
					return
				}
				if l == nil {
					continue
				}
				mu.Lock()
				if prev, ok := leasedBy[l.Operation.ID]; ok {
					dup = append(dup, fmt.Sprintf("%s leased by %s and %s", l.Operation.ID, prev, wid))
				}
				leasedBy[l.Operation.ID] = wid
				mu.Unlock()
				if _, err := w.Result(b.ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
					t.Errorf("Result: %v", err)
					return
				}
				mu.Lock()
				finished++
				if finished == ops {
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	b.waitAsleep("8 waiting workers", func(n int) bool { return n == workers })
	var submitted sync.WaitGroup
	for s := range 4 {
		submitted.Go(func() {
			for i := range ops / 4 {
				if _, err := b.admin.Submit(b.ctx, api.OperationSpec{Pool: "p", Script: "echo", Name: fmt.Sprintf("s%d-%d", s, i)}); err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
			}
		})
	}
	submitted.Wait()
	wg.Wait()
	if len(dup) > 0 {
		t.Fatalf("operations leased twice: %v", dup)
	}
	if len(leasedBy) != ops {
		t.Fatalf("%d operations leased, want %d", len(leasedBy), ops)
	}
	done, err := b.st.ListOperations(b.ctx, store.OperationFilter{State: api.StateSucceeded, Limit: ops + 1})
	if err != nil || len(done) != ops {
		t.Fatalf("%d operations succeeded, %v; want %d", len(done), err, ops)
	}
}
