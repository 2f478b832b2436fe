// Package portal is the dispatch server's web portal, served at / beside the API: server-rendered pages of
// pools, workers, operations and deployments (with a live log view), cancelling, "Add a Kubernetes worker" (a
// registration token and the helm command `octo-worker install` prints) and the requests advice. An admin
// logs in with the admin token and gets a cookie session; every form carries a CSRF token. The portal reaches
// the server only through Backend, which it declares; package server implements it with its own API routes.
package portal

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Backend is what the portal needs of the dispatch server. Errors are the API's; Explain turns one into the
// status and message the API would answer.
type Backend interface {
	Sessions
	// IsAdminToken reports whether token is the admin token, comparing in constant time.
	IsAdminToken(token string) bool
	Pools(ctx context.Context) ([]api.Pool, error)
	Workers(ctx context.Context) ([]api.Worker, error)
	Operations(ctx context.Context, f Filter) ([]api.Operation, error)
	Operation(ctx context.Context, id string) (api.Operation, error)
	CancelOperation(ctx context.Context, id string) (api.Operation, error)
	Deployments(ctx context.Context, limit int) ([]api.Deployment, error)
	Deployment(ctx context.Context, id string) (api.Deployment, error)
	CancelDeployment(ctx context.Context, id string) (api.Deployment, error)
	CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.RegistrationToken, error)
	// RequestsAdvice is GET /api/v1/requests/advice: script pod requests from measured usage.
	RequestsAdvice(ctx context.Context, pool, step string) (api.RequestsAdvice, error)
	// FollowLogs serves an operation's log stream, GET /api/v1/operations/{id}/logs with r's after and
	// follow parameters (NDJSON api.LogEvent records), the stream the CLI follows.
	FollowLogs(w http.ResponseWriter, r *http.Request, id string)
	Explain(r *http.Request, err error) (status int, message string)
}

// Filter selects operations, newest first.
type Filter struct {
	State        api.State
	Pool         string
	WorkerID     string
	DeploymentID string
	Limit        int // 1 to MaxLimit
}

// Page sizes: lists show the newest DefaultLimit rows unless the page asks for up to MaxLimit (the API's
// own bound on a list).
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// csp allows only the portal's own stylesheet, script and requests: no inline script or style, no frames,
// forms post only to the portal.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// maxForm bounds a form post's body: the portal's forms hold a few short fields.
const maxForm = 64 << 10

// Portal serves the pages. Its zero value is not usable; use New.
type Portal struct {
	b     Backend
	log   *logrus.Entry
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the portal over b.
func New(b Backend, log *logrus.Entry) *Portal {
	p := &Portal{b: b, log: log, pages: parsePages(), mux: http.NewServeMux()}
	static, _ := fs.Sub(staticFS, "static")
	p.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.FS(static))))
	p.mux.HandleFunc("GET /login", p.loginPage)
	p.mux.HandleFunc("POST /login", p.login)
	p.mux.HandleFunc("POST /logout", p.admin(p.logout))
	p.mux.HandleFunc("GET /{$}", p.admin(p.poolsPage))
	p.mux.HandleFunc("GET /workers", p.admin(p.workersPage))
	p.mux.HandleFunc("GET /workers/new", p.admin(p.addWorkerPage))
	p.mux.HandleFunc("POST /workers/new", p.admin(p.addWorker))
	p.mux.HandleFunc("GET /chart/{file}", p.admin(p.chart))
	p.mux.HandleFunc("GET /operations", p.admin(p.operationsPage))
	p.mux.HandleFunc("GET /operations/{id}", p.admin(p.operationPage))
	p.mux.HandleFunc("GET /operations/{id}/logs", p.admin(p.logs))
	p.mux.HandleFunc("POST /operations/{id}/cancel", p.admin(p.cancelOperation))
	p.mux.HandleFunc("GET /deployments", p.admin(p.deploymentsPage))
	p.mux.HandleFunc("GET /deployments/{id}", p.admin(p.deploymentPage))
	p.mux.HandleFunc("POST /deployments/{id}/cancel", p.admin(p.cancelDeployment))
	p.mux.HandleFunc("GET /advice", p.admin(p.advicePage))
	return p
}

// ServeHTTP sets the security headers every reply carries and routes the request.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	}
	if _, pattern := p.mux.Handler(r); pattern == "" {
		p.fail(w, r, http.StatusNotFound, fmt.Sprintf("no page %s %s", r.Method, r.URL.Path), nil)
		return
	}
	p.mux.ServeHTTP(w, r)
}

func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{"ago": ago, "duration": duration, "when": when, "terminal": func(s api.State) bool { return s.Terminal() }, "has": slices.Contains[[]string], "mib": mib}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, name := range names {
		if name == "templates/layout.html" {
			continue
		}
		pages[name[len("templates/"):len(name)-len(".html")]] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, name))
	}
	return pages
}

// view is what every page template gets: the page's own data in Data.
type view struct {
	Title string
	Nav   string // the nav entry to highlight
	CSRF  string // the session's CSRF token, for every form
	Data  any
}

// render writes page name with data.
func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	t, ok := p.pages[name]
	if !ok {
		panic("portal: no template " + name)
	}
	v := view{Title: title, Nav: name, Data: data}
	if s, ok := sessionOf(r); ok {
		v.CSRF = s.csrf
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		p.log.WithError(err).WithField("page", name).Error("rendering a page")
		http.Error(w, "internal error rendering the page; the server log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail renders the error page: with err, its status and message come from Explain.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	if err != nil {
		status, msg = p.b.Explain(r, err)
		if status >= 500 {
			p.log.WithError(err).WithField("path", r.URL.Path).Error("portal request failed")
		}
	}
	p.render(w, r, status, "error", http.StatusText(status), msg)
}

// mib formats a byte count in MiB.
func mib(b float64) string { return fmt.Sprintf("%.0fMi", b/(1<<20)) }

// ago says how long before now t was, to the second ("" for a zero time).
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// when formats a time in UTC.
func when(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return ""
		}
		return v.UTC().Format("2006-01-02 15:04:05Z")
	case *time.Time:
		if v == nil {
			return ""
		}
		return when(*v)
	}
	return ""
}

// duration is how long an operation ran: start to finish, or start to now while it runs ("" before it starts).
func duration(op api.Operation) string {
	if op.StartedAt == nil {
		return ""
	}
	end := time.Now()
	if op.FinishedAt != nil {
		end = *op.FinishedAt
	}
	return end.Sub(*op.StartedAt).Round(100 * time.Millisecond).String()
}
