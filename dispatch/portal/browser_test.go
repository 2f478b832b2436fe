package portal_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"sigs.k8s.io/yaml"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// chromium finds the browser: $OCTO_CHROMIUM, else Debian's chromium on the PATH. Without one the test skips
// with a message, except in CI (CI set), where .ci/run installs it and a missing browser is a failure.
func chromium(t *testing.T) string {
	if p := os.Getenv("OCTO_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and CI is set: install it (apt-get install -y chromium; .ci/run does) or set OCTO_CHROMIUM")
	}
	t.Skip("SKIPPED: the portal's browser test needs chromium (apt-get install -y chromium, or set OCTO_CHROMIUM); CI runs it")
	return ""
}

// outputDir is where screenshots go: $OCTO_TEST_OUTPUT/<test> when set, else the test's temp dir.
func outputDir(t *testing.T) string {
	dir := t.TempDir()
	if root := os.Getenv("OCTO_TEST_OUTPUT"); root != "" {
		dir = filepath.Join(root, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browser starts a headless chromium for the test.
func browser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)),
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // chromium refuses to run as root with its sandbox
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 4*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancelTimeout() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return bctx
}

// TestPortalInBrowser drives the portal in a real browser against a real dispatch server: log in, add a
// worker (its registration token, from the page, registers the test's worker), follow a running operation's
// log while the worker appends lines, cancel it from the page and see it cancelled, read the requests advice;
// a logged-out request and forged form posts are refused. It takes a screenshot of every page.
func TestPortalInBrowser(t *testing.T) {
	ctx := browser(t)
	out := outputDir(t)
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	admin := srv.Admin
	tctx := t.Context()
	if _, err := admin.CreatePool(tctx, "web", "the portal's pool"); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg) // quality 100: PNG
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(out, name+".png"), buf, 0o644)
		})
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(css("body")))
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("%s: %v\nthe browser is at %s:\n%s", step, err, loc, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// A logged-out browser is sent to the login page; a wrong token is refused there.
	do("opening the portal logged out", chromedp.Navigate(srv.URL+"/workers"), chromedp.WaitVisible(css("#token")))
	loc := location()
	do("a wrong admin token", chromedp.SendKeys(css("#token"), "not-the-admin-token"), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#error")), shot("login"))
	if errText := text("#error"); !strings.Contains(loc, "/login?next=%2Fworkers") || !strings.Contains(errText, "wrong admin token") {
		t.Fatalf("logged out: at %s with %q, want the login page and a refused token", loc, errText)
	}
	do("logging in", chromedp.SendKeys(css("#token"), dispatchtest.AdminToken), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#workers-empty, #workers")))
	loc = location()
	do("the pools page", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(css("#pools")), shot("pools"))
	if pools := text("#pools"); !strings.HasSuffix(loc, "/workers") || !strings.Contains(pools, "web") {
		t.Fatalf("after login: at %s, pools %q; want /workers, then the pool web", loc, pools)
	}

	// Add a worker: the form's values are checked as install checks them, then the page shows the command.
	do("a worker with a bad request",
		chromedp.Navigate(srv.URL+"/workers/new"), chromedp.WaitVisible(css("#add-worker")), shot("add-worker"),
		chromedp.Click(css(`input[name=pool][value=web]`)), chromedp.SendKeys(css("#cpu"), "lots"), chromedp.Click(css("#create")),
		chromedp.WaitVisible(css("#problems")))
	if problems := text("#problems"); !strings.Contains(problems, "scriptPods.resources.requests.cpu") {
		t.Fatalf("a bad CPU request: problems %q, want one naming scriptPods.resources.requests.cpu", problems)
	}
	do("adding a worker",
		chromedp.SetValue(css("#cpu"), "500m"), chromedp.SendKeys(css("#memory"), "512Mi"), chromedp.SendKeys(css("#image"), "debian:bookworm"),
		chromedp.Click(css("#create")), chromedp.WaitVisible(css("#helm-command")), shot("worker-command"))
	command, values := text("#helm-command"), text("#values")
	chartHref, err := chromedp.Run(ctx, chromedp.AttributeValue(css("#chart"), "href"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := chartgen.EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	v := ch.Metadata.Version
	want := fmt.Sprintf("helm upgrade --install octo-worker ./octo-worker-%s.tgz --namespace octo-worker --create-namespace "+
		"-f ./octo-worker-values.yaml --set-literal scriptPods.worker.image=debian:bookworm "+
		"--set-literal scriptPods.resources.requests.cpu=500m --set-literal scriptPods.resources.requests.memory=512Mi", v)
	if strings.TrimSpace(command) != want {
		t.Fatalf("the page's command:\n%s\nwant what `octo-worker install` prints:\n%s", command, want)
	}
	var file struct {
		Worker struct {
			ServerURL         string   `json:"serverUrl"`
			Pools             []string `json:"pools"`
			RegistrationToken string   `json:"registrationToken"`
		} `json:"worker"`
	}
	if err := yaml.Unmarshal([]byte(values), &file); err != nil {
		t.Fatalf("the page's values file: %v\n%s", err, values)
	}
	if file.Worker.ServerURL != srv.URL || strings.Join(file.Worker.Pools, ",") != "web" {
		t.Fatalf("the values file says server %q pools %v; want %s and [web]", file.Worker.ServerURL, file.Worker.Pools, srv.URL)
	}
	reg, err := admin.WithToken(file.Worker.RegistrationToken).Register(tctx, api.RegisterRequest{
		Name: "browser-worker", Pools: []string{"web"}, Version: "0.1.0", Capacity: 2})
	if err != nil {
		t.Fatalf("registering with the token from the page: %v", err)
	}
	worker := admin.WithToken(reg.WorkerToken)

	// The session cookie lets plain HTTP requests act as this browser (HttpOnly hides it from scripts only).
	cookies, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL}})
	})
	if err != nil {
		t.Fatalf("reading the session cookie: %v", err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "octo_session" {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want octo_session, HttpOnly, SameSite=Strict", session)
	}
	get := func(path string, cookie bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(tctx, "GET", srv.URL+path, nil)
		if cookie {
			req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get(chartHref.Value, true); !chartHref.Exists || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/gzip" {
		t.Fatalf("the chart link %q: %d %s, want 200 and an archive", chartHref.Value, resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// A running operation: the page follows its log while the worker appends lines.
	op, err := admin.Submit(tctx, api.OperationSpec{Name: "deploy <web>", Pool: "web", Script: "echo '<b>not bold</b>'"})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := worker.Lease(tctx, 10*time.Second)
	if err != nil || lease == nil || lease.Operation.ID != op.ID {
		t.Fatalf("leasing %s: %+v, %v", op.ID, lease, err)
	}
	if _, err := worker.SetRunning(tctx, op.ID, lease.LeaseID, ""); err != nil {
		t.Fatal(err)
	}
	seq := int64(0)
	appendLines := func(texts ...string) {
		t.Helper()
		var lines []api.LogLine
		for _, s := range texts {
			seq++
			lines = append(lines, api.LogLine{Seq: seq, Time: time.Now().UTC(), Stream: api.StreamStdout, Text: s})
		}
		if _, err := worker.AppendLogs(tctx, op.ID, lease.LeaseID, lines); err != nil {
			t.Fatalf("appending lines: %v", err)
		}
	}
	appendLines("line 1", "line 2", "<script>alert(1)</script>")
	healthy := api.HeartbeatRequest{Version: "0.1.0", Capacity: 2, Running: []string{op.ID}, Health: api.Health{OK: true, CheckedAt: time.Now().UTC()}}
	if _, err := worker.Heartbeat(tctx, healthy); err != nil {
		t.Fatal(err)
	}
	do("the workers page", chromedp.Navigate(srv.URL+"/workers"), chromedp.WaitVisible(css("#workers")), shot("workers"))
	workers := text("#workers")
	for _, w := range []string{"browser-worker", "healthy", "0.1.0", op.ID, "1 / 2"} {
		if !strings.Contains(workers, w) {
			t.Fatalf("the workers page lacks %q:\n%s", w, workers)
		}
	}
	do("following the log", chromedp.Navigate(srv.URL+"/operations/"+op.ID),
		chromedp.WaitVisible(css(`#log span[data-pos="3"]`)), shot("operation-log-3"))
	appendLines("line 4", "line 5")
	do("following the log as it grows", chromedp.WaitVisible(css(`#log span[data-pos="5"]`)), shot("operation-log-5"))
	logText := text("#log")
	if want := "line 1\nline 2\n<script>alert(1)</script>\nline 4\nline 5"; strings.TrimSpace(logText) != want {
		t.Fatalf("the page's log:\n%s\nwant:\n%s", logText, want)
	}

	// Forged form posts: from another site (the browser sends the cookie: 127.0.0.1 on another port is the same
	// site) and without the CSRF token. Neither cancels.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form method="post" action="%s/operations/%s/cancel"><button id="go">win a prize</button></form>`, srv.URL, op.ID)
	}))
	defer evil.Close()
	do("a form posted from another site", chromedp.Navigate(evil.URL), chromedp.Click(css("#go")),
		chromedp.WaitVisible(css("#error")), shot("forged-post"))
	if errText := text("#error"); !strings.Contains(errText, "another site") {
		t.Fatalf("a cross-site post: %q, want the refusal", errText)
	}
	post := func(path string, form url.Values, cookie bool, origin string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(tctx, "POST", srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if cookie {
			req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cancelPath := "/operations/" + op.ID + "/cancel"
	for _, c := range []struct {
		name   string
		form   url.Values
		cookie bool
		origin string
		want   int
	}{
		{"no CSRF token", nil, true, srv.URL, 403},
		{"a wrong CSRF token", url.Values{"csrf": {"guess"}}, true, srv.URL, 403},
		{"another origin", nil, true, "http://evil.example", 403},
		{"logged out", nil, false, srv.URL, 401},
	} {
		if got := post(cancelPath, c.form, c.cookie, c.origin); got != c.want {
			t.Errorf("cancel with %s: %d, want %d", c.name, got, c.want)
		}
	}
	if got, err := admin.Operation(tctx, op.ID); err != nil || got.CancelRequested || got.State != api.StateRunning {
		t.Fatalf("after forged posts the operation is %+v (%v), want running without a cancel", got, err)
	}
	if resp := get("/workers", false); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("a logged-out page request: %d to %q, want 303 to the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get("/operations/"+op.ID+"/logs", false); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a logged-out log stream: %d, want 401", resp.StatusCode)
	}

	// Cancel from the page: the worker hears it in its heartbeat reply, stops, and the page shows the end.
	do("cancelling", chromedp.Navigate(srv.URL+"/operations/"+op.ID), chromedp.WaitVisible(css(`#log span[data-pos="5"]`)),
		chromedp.Click(css("#cancel")), chromedp.WaitVisible(css("#cancel:disabled")))
	hb, err := worker.Heartbeat(tctx, healthy)
	if err != nil || len(hb.Cancel) != 1 || hb.Cancel[0] != op.ID {
		t.Fatalf("heartbeat after the cancel: %+v, %v; want the operation to cancel", hb, err)
	}
	appendLines("cancelled: stopping")
	if _, err := worker.Result(tctx, op.ID, api.ResultRequest{LeaseID: lease.LeaseID, State: api.StateCancelled, Message: "cancelled by an admin", LastSeq: seq}); err != nil {
		t.Fatal(err)
	}
	do("seeing it cancelled", chromedp.WaitVisible(css("#state.cancelled")), shot("operation-cancelled"))
	if state := text("#state"); state != "cancelled" {
		t.Fatalf("state %q, want cancelled", state)
	}

	// The requests advice: five operations end with a measured usage; the page shows what the API advises.
	for i := range 5 {
		o, err := admin.Submit(tctx, api.OperationSpec{Name: "sized", Pool: "web", Script: "true"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := worker.Lease(tctx, 10*time.Second)
		if err != nil || l == nil || l.Operation.ID != o.ID {
			t.Fatalf("leasing %s: %+v, %v", o.ID, l, err)
		}
		if _, err := worker.SetRunning(tctx, o.ID, l.LeaseID, ""); err != nil {
			t.Fatal(err)
		}
		usage := &api.Usage{PeakMemoryBytes: int64(100+i) << 20, CPUSeconds: 0.001, Source: api.UsageCgroup}
		if _, err := worker.Result(tctx, o.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: new(int), Usage: usage}); err != nil {
			t.Fatal(err)
		}
	}
	advice, err := admin.RequestsAdvice(tctx, "web", "")
	if err != nil || advice.Requests.Memory == "" {
		t.Fatalf("the API's advice: %+v, %v; want requests", advice, err)
	}
	do("the requests advice", chromedp.Navigate(srv.URL+"/advice"), chromedp.WaitVisible(css("#advice-form")),
		chromedp.Click(css("#advise")), chromedp.WaitVisible(css("#advice-command")), shot("advice"))
	want = chartgen.RequestsUpgrade("octo-worker", "octo-worker", "./octo-worker-"+v+".tgz", advice.Requests.CPU, advice.Requests.Memory)
	if got := text("#advice-command"); strings.TrimSpace(got) != want {
		t.Fatalf("the advice page's command:\n%s\nwant what `requests advise` prints:\n%s", got, want)
	}

	// Lists: operations and a deployment.
	dep, err := admin.Deploy(tctx, api.DeploymentSpec{Name: "release 1.2", Pool: "web", Steps: []api.OperationSpec{{Name: "migrate", Script: "true"}, {Name: "roll out", Script: "true"}}})
	if err != nil {
		t.Fatal(err)
	}
	do("the operations page", chromedp.Navigate(srv.URL+"/operations"), chromedp.WaitVisible(css("#operations")), shot("operations"))
	opsText := text("#operations")
	do("the deployments", chromedp.Navigate(srv.URL+"/deployments"), chromedp.WaitVisible(css("#deployments")), shot("deployments"),
		chromedp.Navigate(srv.URL+"/deployments/"+dep.ID), chromedp.WaitVisible(css("#operations")), shot("deployment"))
	depText := text("#operations")
	if !strings.Contains(opsText, "deploy <web>") || !strings.Contains(opsText, "cancelled") || !strings.Contains(depText, "roll out") {
		t.Fatalf("operations page:\n%s\ndeployment page:\n%s", opsText, depText)
	}

	// Logging out ends the session on the server: the old cookie no longer opens a page.
	do("logging out", chromedp.Click(css(".logout button")), chromedp.WaitVisible(css("#token")))
	if resp := get("/workers", true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the cookie after logout: %d, want 303 to the login page", resp.StatusCode)
	}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
