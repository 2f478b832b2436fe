package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The one server a test process starts lazily (URL) and stops in Main. A test harness needs this state per
// process: a server per test would cost a second each.
var shared struct {
	mu     sync.Mutex
	server *Server
	dir    string
	err    error // a failed start, reported to every later caller
}

// URL returns the URL of a fresh, empty database for this test. With $OCTO_TEST_POSTGRES (the URL of a server
// where the tests may create databases) the database is created there and dropped when the test ends; else
// it is created on the private server of this test process, started on first use. Without PostgreSQL binaries
// the test is skipped with a message saying how to install them, or failed when $CI is set.
func URL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := randomName()
	if admin := os.Getenv("OCTO_TEST_POSTGRES"); admin != "" {
		u, err := withDatabase(admin, name)
		if err != nil {
			t.Fatalf("OCTO_TEST_POSTGRES: %v", err)
		}
		if err := createDatabase(ctx, admin, name); err != nil {
			t.Fatalf("OCTO_TEST_POSTGRES: %v", err)
		}
		t.Cleanup(func() { dropDatabase(t, admin, name) })
		return u
	}
	s, err := sharedServer()
	if errors.Is(err, ErrNoBinaries) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set, so PostgreSQL tests must not skip: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatalf("starting the test PostgreSQL: %v", err)
	}
	u, err := s.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func sharedServer() (*Server, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil || shared.err != nil {
		return shared.server, shared.err
	}
	if _, err := BinDir(); err != nil {
		shared.err = err
		return nil, err
	}
	dir, err := os.MkdirTemp("", "octo-pg-")
	if err != nil {
		shared.err = fmt.Errorf("making the server's directory: %w", err)
		return nil, shared.err
	}
	s, err := Start(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		shared.err = err
		return nil, err
	}
	shared.server, shared.dir = s, dir
	return s, nil
}

// Main runs the tests of a package (call it from TestMain), then stops the server URL started, if any, and
// exits with the tests' status.
func Main(m *testing.M) {
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil {
		return nil
	}
	err := shared.server.Stop()
	shared.server = nil
	return errors.Join(err, os.RemoveAll(shared.dir))
}

// withDatabase returns the server URL u with its database replaced by name.
func withDatabase(u, name string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "postgres" && parsed.Scheme != "postgresql") {
		return "", fmt.Errorf("%q is not a postgres:// URL", u)
	}
	parsed.Path = "/" + name
	return parsed.String(), nil
}

func dropDatabase(t testing.TB, admin, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Errorf("dropping test database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("dropping test database %s: %v", name, err)
	}
}
