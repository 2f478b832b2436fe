package portal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SessionTTL is how long a login lasts: the session ends this long after the login, whatever happens meanwhile.
const SessionTTL = 8 * time.Hour

// maxSessions bounds the sessions kept; past it the oldest logins end first.
const maxSessions = 1000

// Cookie names. The login cookie carries the login form's CSRF token (there is no session yet to keep it in).
const (
	sessionCookie = "octo_session"
	loginCookie   = "octo_login"
)

// session is one admin login, kept on the server; the browser holds only its random id.
type session struct {
	csrf    string
	expires time.Time
}

type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]session // id -> session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[string]session{}}
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start opens a session and returns its id.
func (ss *sessions) start(now time.Time) (string, session) {
	id, s := randomToken(), session{csrf: randomToken(), expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, v := range ss.m {
		if !now.Before(v.expires) {
			delete(ss.m, k)
		}
	}
	for len(ss.m) >= maxSessions {
		oldest := ""
		for k, v := range ss.m {
			if oldest == "" || v.expires.Before(ss.m[oldest].expires) {
				oldest = k
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[id] = s
	return id, s
}

// get returns the live session of id.
func (ss *sessions) get(id string, now time.Time) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[id]
	if ok && !now.Before(s.expires) {
		delete(ss.m, id)
		return session{}, false
	}
	return s, ok
}

func (ss *sessions) end(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

type sessionKey struct{}

func sessionOf(r *http.Request) (session, bool) {
	s, ok := r.Context().Value(sessionKey{}).(session)
	return s, ok
}

// admin wraps a page that needs a login: a request without a live session is sent to the login page (a
// script's log stream gets 401), and a POST must come from the portal's own origin with the session's CSRF
// token (else 403).
func (p *Portal) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var s session
		ok := false
		if c, err := r.Cookie(sessionCookie); err == nil {
			s, ok = p.sessions.get(c.Value, time.Now())
		}
		if !ok {
			if strings.HasSuffix(r.URL.Path, "/logs") || r.Method != http.MethodGet {
				p.fail(w, r, http.StatusUnauthorized, "you are not logged in (or your session ended): log in again", nil)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if msg := forged(r, s.csrf); msg != "" {
				p.fail(w, r, http.StatusForbidden, msg, nil)
				return
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	}
}

// forged says why a form post is refused ("" when it is not): it comes from another origin, or lacks the
// CSRF token it must carry.
func forged(r *http.Request, csrf string) string {
	if !sameOrigin(r) {
		return "this form was posted from another site: use the portal's own pages"
	}
	if err := r.ParseForm(); err != nil {
		return "the form could not be read: reload the page and send it again"
	}
	got := r.PostForm.Get("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
		return "the form's CSRF token is missing or wrong: reload the page and send it again"
	}
	return ""
}

// sameOrigin checks the Origin header (browsers send it with every POST) and, without one, Sec-Fetch-Site.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		return o == origin(r)
	}
	site := r.Header.Get("Sec-Fetch-Site")
	return site == "" || site == "same-origin" || site == "none"
}

// origin is the portal's own origin as the browser sees it.
func origin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func (p *Portal) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

type loginView struct {
	CSRF, Next, Error string
}

// loginPage shows the login form with a fresh login CSRF token in a cookie and in the form (double submit).
func (p *Portal) loginPage(w http.ResponseWriter, r *http.Request) {
	p.showLogin(w, r, http.StatusOK, "")
}

func (p *Portal) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	p.setCookie(w, r, loginCookie, tok, 600)
	p.render(w, r, status, "login", "Log in", loginView{CSRF: tok, Next: safeNext(r.FormValue("next")), Error: msg})
}

// login checks the admin token (in constant time, through the backend) and opens a session.
func (p *Portal) login(w http.ResponseWriter, r *http.Request) {
	msg := "the login form expired: log in again"
	if c, err := r.Cookie(loginCookie); err == nil {
		msg = forged(r, c.Value)
	}
	if msg != "" {
		p.fail(w, r, http.StatusForbidden, msg, nil)
		return
	}
	if !p.b.IsAdminToken(strings.TrimSpace(r.PostForm.Get("token"))) {
		p.log.WithField("remote", r.RemoteAddr).Warn("portal login refused: wrong admin token")
		p.showLogin(w, r, http.StatusUnauthorized, "wrong admin token: use the one the server printed at its first start (or gave --admin-token)")
		return
	}
	id, _ := p.sessions.start(time.Now())
	p.setCookie(w, r, loginCookie, "", -1)
	p.setCookie(w, r, sessionCookie, id, int(p.sessions.ttl.Seconds()))
	p.log.WithField("remote", r.RemoteAddr).Info("portal login")
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		p.sessions.end(c.Value)
	}
	p.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a post-login target only when it is a path of this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}
