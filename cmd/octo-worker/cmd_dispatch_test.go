package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// cliRun runs the octo-worker CLI in-process with args and returns stdout, stderr and its error.
func cliRun(ctx context.Context, args ...string) (string, string, error) {
	var out, errOut syncBuffer
	app := newApp("test")
	app.Writer, app.ErrWriter = &out, &errOut
	err := runApp(ctx, app, append([]string{"octo-worker", "--log-level", "warn"}, args...))
	return out.String(), errOut.String(), err
}

// appStart serializes the start of in-process CLI runs: while it sets up and parses, urfave/cli writes
// package-level values (its help command, HelpFlag's and VersionFlag's defaults), so two apps starting at once
// race. A run holds it until its command's action starts (or the run ends), so long-running commands such as
// the server still run beside other tests.
var appStart sync.Mutex

// runApp runs app with args, holding appStart until its command's action starts.
func runApp(ctx context.Context, app *cli.App, args []string) error {
	appStart.Lock()
	release := sync.OnceFunc(appStart.Unlock)
	defer release()
	releaseAtAction(app.Commands, release)
	return app.RunContext(ctx, args)
}

func releaseAtAction(cmds []*cli.Command, release func()) {
	for _, c := range cmds {
		releaseAtAction(c.Subcommands, release)
		if action := c.Action; action != nil {
			c.Action = func(c *cli.Context) error {
				release()
				return action(c)
			}
		}
	}
}

type syncBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	grew chan struct{} // closed by the next Write; made by await
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew != nil {
		close(s.grew)
		s.grew = nil
	}
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// await waits until what was written contains text, and reports false if stop is closed first.
func (s *syncBuffer) await(text string, stop <-chan struct{}) bool {
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), text) {
			s.mu.Unlock()
			return true
		}
		if s.grew == nil {
			s.grew = make(chan struct{})
		}
		grew := s.grew
		s.mu.Unlock()
		select {
		case <-grew:
		case <-stop:
			return strings.Contains(s.String(), text)
		}
	}
}

// startServer runs `octo-worker server` on a free loopback port and returns its URL and generated admin token.
func startServer(t *testing.T) (string, string) {
	t.Helper()
	url, token, _ := startServerOn(t, filepath.Join(t.TempDir(), "d.db"))
	return url, token
}

// startServerOn runs `octo-worker server` with --db db and the extra flags on a free loopback port until the
// test ends, and returns its URL, its generated admin token and a function that stops it now (and waits).
func startServerOn(t *testing.T, db string, flags ...string) (string, string, func()) {
	t.Helper()
	addr := closedAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	var runErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		app := newApp("test")
		app.Writer, app.ErrWriter = &out, &out
		runErr = runApp(ctx, app, append([]string{"octo-worker", "--log-level", "warn", "server", "--listen", addr,
			"--db", db}, flags...))
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-exited
			if runErr != nil {
				t.Errorf("server command: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	// The server shows the token once it listens.
	if !out.await("shown only this once", exited) {
		t.Fatalf("server exited without showing a token:\n%s", out.String())
	}
	url := "http://" + addr
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("server showed its token but does not answer: %v\n%s", err, out.String())
	}
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	token := lines[len(lines)-1]
	if !strings.Contains(out.String(), "shown only this once") || !strings.HasPrefix(token, "owa_") {
		t.Fatalf("server output does not carry a generated admin token:\n%s", out.String())
	}
	return url, token, stop
}

// A server that cannot listen stops before it makes an admin token: a token shown is a server that answers.
func TestServerShowsNoTokenWhenItCannotListen(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stdout, _, err := cliRun(t.Context(), "server", "--listen", ln.Addr().String(), "--db", filepath.Join(t.TempDir(), "d.db"))
	if err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("server on a busy port: %v, want a --listen error", err)
	}
	if strings.Contains(stdout, "admin token") {
		t.Errorf("server on a busy port showed an admin token it cannot serve:\n%s", stdout)
	}
}

// fakeWorker registers a worker with the real client and answers every operation of pool by posting the
// given lines and ending it with exit code exit (a script's stand-in: the real worker lives in jobrunner).
func fakeWorker(t *testing.T, ctx context.Context, url, adminToken, pool string, run func(op api.Operation) ([]string, int)) {
	t.Helper()
	admin, err := client.New(client.Config{Server: url, Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "fake", Pools: []string{pool}, Version: "test", Capacity: 1})
	go func() {
		for ctx.Err() == nil {
			l, err := w.Lease(ctx, 5*time.Second)
			if err != nil || l == nil {
				continue
			}
			texts, exit := run(l.Operation)
			var lines []api.LogLine
			for i, text := range texts {
				lines = append(lines, api.LogLine{Seq: int64(i + 1), Time: time.Now(), Stream: api.StreamStdout, Text: text})
			}
			if _, err := w.AppendLogs(ctx, l.Operation.ID, l.LeaseID, lines); err != nil {
				continue
			}
			state := api.StateSucceeded
			if exit != 0 {
				state = api.StateFailed
			}
			_, _ = w.Result(ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: state, ExitCode: &exit, LastSeq: int64(len(lines))})
		}
	}()
}

func TestCLIEndToEnd(t *testing.T) {
	url, token := startServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conn := []string{"--server", url, "--token", token}
	run := func(args ...string) (string, string, error) {
		// The connection flags go right after the command's words: urfave/cli stops reading flags at the
		// first positional argument.
		words := 2
		if args[0] == "submit" || args[0] == "deploy" {
			words = 1
		}
		full := append(append(append([]string{}, args[:words]...), conn...), args[words:]...)
		return cliRun(ctx, full...)
	}
	if out, _, err := run("pool", "create", "--description", "web servers", "web"); err != nil || !strings.Contains(out, "created pool web") {
		t.Fatalf("pool create: %q %v", out, err)
	}
	out, _, err := run("pool", "list", "-o", "json")
	var pools []api.Pool
	if err != nil || json.Unmarshal([]byte(out), &pools) != nil || len(pools) != 1 || pools[0].Description != "web servers" {
		t.Fatalf("pool list -o json: %q %v", out, err)
	}
	out, errOut, err := run("token", "create", "--pool", "web", "--ttl", "1h")
	if err != nil || !strings.HasPrefix(out, "owr_") || !strings.Contains(errOut, "shown only once") {
		t.Fatalf("token create: %q %q %v", out, errOut, err)
	}
	fakeWorker(t, ctx, url, token, "web", func(op api.Operation) ([]string, int) {
		switch {
		case strings.Contains(op.Script, "exit 3"):
			return []string{"about to fail"}, 3
		case strings.Contains(op.Script, "secret"):
			return []string{"the password is " + op.Variables[0].Value}, 0
		}
		return []string{"hello from " + op.Name}, 0
	})

	// submit --follow prints the log and exits with the operation's exit code.
	out, errOut, err = run("submit", "--pool", "web", "--name", "failing", "--script", "echo; exit 3", "--follow")
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || exitCode(err) != 3 {
		t.Fatalf("submit --follow of a failing script: err %v, want exit code 3", err)
	}
	if out != "about to fail\n" || !strings.Contains(err.Error(), "failed (exit code 3)") {
		t.Errorf("submit --follow printed %q / %q, error %q", out, errOut, err)
	}
	out, _, err = run("submit", "--pool", "web", "--script", "secret", "--secret", "PW=hunter22", "--follow")
	if err != nil || out != "the password is ********\n" {
		t.Errorf("submit with a secret: %q %v; want the value masked", out, err)
	}

	// Refusals name the flag or the server's field.
	_, _, err = run("submit", "--pool", "web", "--script", "x", "--cpu", "lots")
	if err == nil || !strings.Contains(err.Error(), "--cpu") {
		t.Errorf("bad --cpu: %v", err)
	}
	_, _, err = run("submit", "--pool", "nope", "--script", "x")
	if err == nil || !strings.Contains(err.Error(), "pool create nope") {
		t.Errorf("unknown pool: %v", err)
	}

	// deploy -f: steps in order, a failed step stops the rest, the exit code is the failed step's.
	process := filepath.Join(t.TempDir(), "process.yaml")
	os.WriteFile(process, []byte("name: release-1\npool: web\nsteps:\n  - name: one\n    script: echo one\n"+
		"  - name: two\n    script: exit 3\n  - name: three\n    script: echo three\n"), 0o600)
	out, errOut, err = run("deploy", "-f", process, "--follow")
	if !errors.As(err, &ec) || ec.ExitCode() != 3 {
		t.Fatalf("deploy --follow: %v (stderr %q)", err, errOut)
	}
	if out != "[1] hello from one\n[2] about to fail\n" || !strings.Contains(errOut, "step 3/3 three: cancelled") ||
		!strings.Contains(err.Error(), "failed") {
		t.Errorf("deploy --follow printed:\n%s\n%s", out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: r\npool: web\nsteps:\n  - script: x\n    imagee: alpine\n"), 0o600)
	if _, _, err := run("deploy", "-f", bad); err == nil || !strings.Contains(err.Error(), "steps[0].imagee") {
		t.Errorf("deploy of a file with a typo: %v, want the field path", err)
	}

	// ops list / show / logs / cancel, deployments and workers.
	out, _, err = run("ops", "list", "--state", "failed")
	if err != nil || strings.Count(out, "failed") < 2 {
		t.Errorf("ops list --state failed:\n%s %v", out, err)
	}
	out, _, err = run("ops", "list", "-o", "json", "--limit", "1")
	var ops []api.Operation
	if err != nil || json.Unmarshal([]byte(out), &ops) != nil || len(ops) != 1 {
		t.Fatalf("ops list -o json: %q %v", out, err)
	}
	id := ops[0].ID
	if out, _, err := run("ops", "show", id); err != nil || !strings.Contains(out, id) {
		t.Errorf("ops show: %q %v", out, err)
	}
	if out, _, err := run("ops", "logs", id); err != nil || out != "" {
		t.Errorf("ops logs of a cancelled step: %q %v", out, err)
	}
	if _, _, err := run("ops", "cancel", id); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("ops cancel of a finished operation: %v", err)
	}
	if out, _, err := run("deployments", "list"); err != nil || !strings.Contains(out, "release-1") || !strings.Contains(out, "failed") {
		t.Errorf("deployments list:\n%s %v", out, err)
	}
	if out, _, err := run("workers", "list"); err != nil || !strings.Contains(out, "fake") || !strings.Contains(out, "healthy") {
		t.Errorf("workers list:\n%s %v", out, err)
	}
	if _, _, err := cliRun(ctx, "pool", "list", "--server", url); err == nil || !strings.Contains(err.Error(), "OCTO_TOKEN") {
		t.Errorf("no token: %v", err)
	}
	if _, _, err := cliRun(ctx, "pool", "list", "--server", url, "--token", "wrong-token-1234567"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: %v", err)
	}
}

func TestExitCodeOf(t *testing.T) {
	t.Parallel()
	code := func(i int) *int { return &i }
	tests := []struct {
		end  api.LogEnd
		want int
	}{
		{api.LogEnd{State: api.StateSucceeded, ExitCode: code(0)}, 0},
		{api.LogEnd{State: api.StateFailed, ExitCode: code(7)}, 7},
		{api.LogEnd{State: api.StateFailed}, 1},
		{api.LogEnd{State: api.StateFailed, ExitCode: code(0)}, 1},
		{api.LogEnd{State: api.StateTimedOut, ExitCode: code(137)}, 124},
		{api.LogEnd{State: api.StateCancelled}, 130},
		{api.LogEnd{State: api.StateLost}, 1},
		// Codes no process can exit with: 256 & 255 = 0 would report a failure as success.
		{api.LogEnd{State: api.StateFailed, ExitCode: code(256)}, 1},
		{api.LogEnd{State: api.StateFailed, ExitCode: code(512)}, 1},
		{api.LogEnd{State: api.StateFailed, ExitCode: code(-1)}, 1},
		{api.LogEnd{State: api.StateFailed, ExitCode: code(255)}, 255},
	}
	for _, tt := range tests {
		if got := exitCodeOf(&tt.end); got != tt.want {
			t.Errorf("exitCodeOf(%+v) = %d, want %d", tt.end, got, tt.want)
		}
	}
}

// TestWorkersRemove: `workers remove ID` says which worker it removed and what became of the operations it
// held; the worker leaves the list, and removing it again says it does not exist.
func TestWorkersRemove(t *testing.T) {
	// Not parallel: see TestOneArgumentRequired.
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	ctx := t.Context()
	if _, err := srv.Admin.CreatePool(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "web-1", Pools: []string{"web"}, Version: "test", Capacity: 2})
	_, idle := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "idle", Pools: []string{"web"}, Version: "test", Capacity: 1})
	op, err := srv.Admin.Submit(ctx, api.OperationSpec{Pool: "web", Script: "echo one"})
	if err != nil {
		t.Fatal(err)
	}
	dep, err := srv.Admin.Deploy(ctx, api.DeploymentSpec{Name: "release", Pool: "web", Steps: []api.OperationSpec{{Script: "a"}, {Script: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if l, err := w.Lease(ctx, 0); err != nil || l == nil {
			t.Fatalf("Lease = %+v, %v", l, err)
		}
	}
	conn := []string{"--server", srv.URL, "--token", dispatchtest.AdminToken}
	run := func(args ...string) (string, error) {
		out, _, err := cliRun(ctx, append(append([]string{"workers", "remove"}, conn...), args...)...)
		return out, err
	}

	out, err := run(reg.WorkerID)
	want := "removed worker web-1 (" + reg.WorkerID + "): its token no longer works\n" +
		"2 operations it held ended as lost (result unknown; its Jobs may still be running): " + op.ID + ", " + dep.Operations[0].ID + "\n" +
		"1 deployment step after a lost one cancelled: " + dep.Operations[1].ID + "\n"
	if err != nil || out != want {
		t.Errorf("workers remove printed %q, %v\nwant %q", out, err, want)
	}
	if got, err := srv.Admin.Operation(ctx, op.ID); err != nil || got.State != api.StateLost {
		t.Errorf("the removed worker's operation: %+v, %v; want lost", got, err)
	}
	if list, _, err := cliRun(ctx, append([]string{"workers", "list"}, conn...)...); err != nil || strings.Contains(list, reg.WorkerID) || !strings.Contains(list, idle.WorkerID) {
		t.Errorf("workers list after the removal:\n%s %v", list, err)
	}
	if _, err := run(reg.WorkerID); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "workers list") {
		t.Errorf("removing twice: %v, want a 404 that points at workers list", err)
	}
	out, err = run("-o", "json", idle.WorkerID)
	var rm api.WorkerRemoval
	if err != nil || json.Unmarshal([]byte(out), &rm) != nil || rm.Worker.ID != idle.WorkerID || rm.Lost == nil || len(rm.Lost) != 0 {
		t.Errorf("workers remove -o json of a worker holding nothing: %q, %v", out, err)
	}
	if _, err := run("wkr bad"); err == nil || !strings.Contains(err.Error(), "not a worker id") {
		t.Errorf("a malformed id: %v", err)
	}
}
