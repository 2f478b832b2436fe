// Package dispatchtest is for tests only: it starts a real dispatch server (package server over a SQLite
// file, on a loopback port) for the tests of the packages that talk to one, and registers workers with it the
// way an agent does. The server package's own tests cannot use it (it imports that package); they have their
// own fixture beside their internals.
package dispatchtest

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
	"github.com/octo-worker/octo-worker/dispatch/server"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// AdminToken is the admin token of every server Start starts.
const AdminToken = "dispatchtest-admin-token"

// Options say where a server keeps its data and listens; the zero value is a new database on a free port.
type Options struct {
	// DB is the SQLite file (default: a new file in the test's temp dir). Pass an earlier server's to restart it.
	DB string
	// Addr is the address to listen on (default: a free loopback port). Pass an earlier server's to restart
	// it; Start waits up to 10 s for the address to be free again.
	Addr string
	// MaxPackageSize is the server's package size limit (default: the server's default).
	MaxPackageSize int64
}

// Server is a dispatch server running until Stop or the end of the test. Its config sets the store re-check to
// an hour, so every wake-up a test sees is an immediate one.
type Server struct {
	URL   string         // http://Addr
	Addr  string         // the address it listens on
	DB    string         // its SQLite file
	Admin *client.Client // a client with AdminToken
	// Packages is its package directory (DB.packages): tests reach the stored content there.
	Packages *pkgfiles.Dir

	stop func()
}

// Start starts a server and stops it when the test ends; the test fails if the server ends with an error.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.DB == "" {
		o.DB = filepath.Join(tb.TempDir(), "dispatch.db")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	st, err := sqlite.Open(tb.Context(), o.DB)
	if err != nil {
		tb.Fatalf("opening the dispatch database: %v", err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	files, err := pkgfiles.Open(o.DB + ".packages")
	if err != nil {
		_ = st.Close()
		tb.Fatalf("opening the package directory: %v", err)
	}
	srv, err := server.New(st, server.Config{PollInterval: time.Hour, Packages: files, MaxPackageSize: o.MaxPackageSize}, log)
	if err != nil {
		_ = st.Close()
		tb.Fatalf("creating the dispatch server: %v", err)
	}
	if _, err := srv.InitAdminToken(tb.Context(), AdminToken); err != nil {
		_ = st.Close()
		tb.Fatalf("setting the admin token: %v", err)
	}
	var ln net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ln, err = net.Listen("tcp", o.Addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		_ = st.Close()
		tb.Fatalf("listening for the dispatch server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	s := &Server{Addr: ln.Addr().String(), DB: o.DB, Packages: files}
	s.URL = "http://" + s.Addr
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("dispatch server: %v", err)
			}
			_ = st.Close()
		})
	}
	tb.Cleanup(s.stop)
	if s.Admin, err = client.New(client.Config{Server: s.URL, Token: AdminToken}); err != nil {
		tb.Fatalf("creating the admin client: %v", err)
	}
	return s
}

// Stop stops the server now (a restart test's cut), waiting until it has stopped; later calls do nothing.
func (s *Server) Stop() { s.stop() }

// Register registers a worker as an agent does: admin creates a registration token for req.Pools (which must
// name at least one pool), and the worker registers with it. It returns the worker's client (its worker
// token on admin's configuration) and the registration.
func Register(tb testing.TB, admin *client.Client, req api.RegisterRequest) (*client.Client, api.RegisterResponse) {
	tb.Helper()
	tok, err := admin.CreateToken(tb.Context(), req.Pools, 0)
	if err != nil {
		tb.Fatalf("creating a registration token for %v: %v", req.Pools, err)
	}
	reg, err := admin.WithToken(tok.Token).Register(tb.Context(), req)
	if err != nil {
		tb.Fatalf("registering worker %q: %v", req.Name, err)
	}
	return admin.WithToken(reg.WorkerToken), reg
}
