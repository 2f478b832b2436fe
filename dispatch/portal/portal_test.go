package portal_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/server"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

const adminToken = "portal-test-admin-token"

// openStore opens a SQLite store in the test's temp dir, closed when the test ends.
func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dispatch.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newServer returns a dispatch server on st whose admin token is adminToken.
func newServer(t *testing.T, st store.Store) *server.Server {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := server.New(st, server.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.InitAdminToken(t.Context(), adminToken); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestOverTLS logs in over HTTPS with plain HTTP requests: the session cookie is Secure there too, and the
// operations page of a server with more than a thousand operations shows a bounded page.
func TestOverTLS(t *testing.T) {
	ts := httptest.NewTLSServer(newServer(t, openStore(t)).Handler())
	defer ts.Close()

	hc := new(http.Client)
	*hc = *ts.Client()
	hc.Jar, _ = cookiejar.New(nil)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	page := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, login := page("/login")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(login)
	if csrf == nil {
		t.Fatalf("no CSRF token in the login form:\n%s", login)
	}
	req, _ := http.NewRequest("POST", ts.URL+"/login", strings.NewReader(url.Values{"csrf": {csrf[1]}, "token": {adminToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", ts.URL)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "octo_session" {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login over TLS: %d, session cookie %+v; want 303 and a Secure, HttpOnly, SameSite=Strict cookie", resp.StatusCode, session)
	}

	admin, err := client.New(client.Config{Server: ts.URL, Token: adminToken, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreatePool(t.Context(), "many", ""); err != nil {
		t.Fatal(err)
	}
	steps := make([]api.OperationSpec, 50) // a deployment's most
	for i := range steps {
		steps[i] = api.OperationSpec{Name: fmt.Sprintf("step %d", i), Script: "true"}
	}
	for i := range 21 { // 1,050 operations
		if _, err := admin.Deploy(t.Context(), api.DeploymentSpec{Name: fmt.Sprintf("d%d", i), Pool: "many", Steps: steps}); err != nil {
			t.Fatal(err)
		}
	}
	rows := regexp.MustCompile(`<tr>\s*<td><a href="/operations/`)
	for _, c := range []struct {
		path string
		rows int
	}{{"/operations", 100}, {"/operations?limit=1000", 1000}, {"/operations?limit=99999", 1000}, {"/operations?state=queued&pool=many&limit=500", 500}} {
		status, body := page(c.path)
		if n := len(rows.FindAllString(body, -1)); status != 200 || n != c.rows || !strings.Contains(body, "filter by state or pool") {
			t.Errorf("%s: %d with %d rows, want 200 with %d and the note that older ones exist", c.path, status, n, c.rows)
		}
	}
}
