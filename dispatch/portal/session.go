package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SessionTTL is how long a login lasts: the session ends this long after the login, whatever happens meanwhile.
const SessionTTL = 8 * time.Hour

// Cookie names. The login cookie carries the login form's CSRF token (there is no session yet to keep it in).
const (
	sessionCookie = "octo_session"
	loginCookie   = "octo_login"
)

// Sessions keeps the logins where every server of the service finds them (the store's, not this process's
// memory: behind a balancer a browser may reach any server). The browser holds only a random id; what is
// kept is its SHA-256.
type Sessions interface {
	// StartSession keeps a login until expires.
	StartSession(ctx context.Context, hash []byte, csrf string, started, expires time.Time) error
	// Session returns the CSRF token of the login whose id hashes to hash, live at now; ok is false when
	// there is none.
	Session(ctx context.Context, hash []byte, now time.Time) (csrf string, ok bool, err error)
	// EndSession ends a login.
	EndSession(ctx context.Context, hash []byte) error
}

// session is the login of a request.
type session struct {
	csrf string
}

// storeFailed answers 503 with msg when the store could not keep or read a login, and logs why.
func (p *Portal) storeFailed(w http.ResponseWriter, r *http.Request, msg string, err error) {
	p.log.WithError(err).WithField("path", r.URL.Path).Error("portal login store failed")
	p.fail(w, r, http.StatusServiceUnavailable, msg, nil)
}

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionHash is what the store keeps of a session id.
func sessionHash(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// startSession opens a login and returns its id, for the cookie.
func (p *Portal) startSession(ctx context.Context) (string, error) {
	id, now := randomToken(), time.Now()
	return id, p.b.StartSession(ctx, sessionHash(id), randomToken(), now, now.Add(SessionTTL))
}

// sessionOfCookie returns the live login of r's session cookie.
func (p *Portal) sessionOfCookie(r *http.Request) (session, bool, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return session{}, false, nil
	}
	csrf, ok, err := p.b.Session(r.Context(), sessionHash(c.Value), time.Now())
	return session{csrf: csrf}, ok, err
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
		s, ok, err := p.sessionOfCookie(r)
		if err != nil {
			p.storeFailed(w, r, "the server cannot read logins now: try again in a moment", err)
			return
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
	id, err := p.startSession(r.Context())
	if err != nil {
		p.storeFailed(w, r, "the server cannot keep your login now: try again in a moment", err)
		return
	}
	p.setCookie(w, r, loginCookie, "", -1)
	p.setCookie(w, r, sessionCookie, id, int(SessionTTL.Seconds()))
	p.log.WithField("remote", r.RemoteAddr).Info("portal login")
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := p.b.EndSession(r.Context(), sessionHash(c.Value)); err != nil {
			p.storeFailed(w, r, "the server cannot end your login now: try again in a moment", err)
			return
		}
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
