package portal_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestSessionsSharedAcrossServers: two servers on one store, as replicas behind a balancer. A login made
// through one is live on the other, and a logout through either ends it on both: sessions live in the store,
// not in a server's memory.
func TestSessionsSharedAcrossServers(t *testing.T) {
	st := openStore(t)
	var urls [2]string
	for i := range urls {
		ts := httptest.NewServer(newServer(t, st).Handler())
		defer ts.Close()
		urls[i] = ts.URL
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	// do sends a request with the given cookies (the browser's, whichever server it reaches).
	do := func(method, base, path string, form url.Values, cookies ...*http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(form.Encode()))
		if method == "POST" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", base)
		}
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	cookie := func(resp *http.Response, name string) *http.Cookie {
		t.Helper()
		for _, c := range resp.Cookies() {
			if c.Name == name && c.Value != "" {
				return c
			}
		}
		t.Fatalf("%s: no %s cookie", resp.Request.URL, name)
		return nil
	}

	resp, login := do("GET", urls[0], "/login", nil)
	csrf := csrfField.FindStringSubmatch(login)
	if csrf == nil {
		t.Fatalf("no CSRF token in the login form:\n%s", login)
	}
	resp, _ = do("POST", urls[0], "/login", url.Values{"csrf": {csrf[1]}, "token": {adminToken}}, cookie(resp, "octo_login"))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login through the first server: %s", resp.Status)
	}
	session := cookie(resp, "octo_session")
	resp, page := do("GET", urls[1], "/workers", nil, session)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a login made through the first server, on the second: %s; want 200", resp.Status)
	}
	csrf = csrfField.FindStringSubmatch(page)
	if csrf == nil {
		t.Fatalf("no CSRF token on the workers page:\n%s", page)
	}
	if resp, _ := do("POST", urls[1], "/logout", url.Values{"csrf": {csrf[1]}}, session); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout through the second server: %s", resp.Status)
	}
	for _, u := range urls { // a browser that kept the cookie (or a thief who copied it)
		if resp, _ := do("GET", u, "/workers", nil, session); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s after the logout: %s; want 303 to the login page", u, resp.Status)
		}
	}
}
