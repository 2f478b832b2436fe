// Package pgtest runs private PostgreSQL servers for tests: Start initdbs and starts one in a directory, URL
// hands each test a fresh, empty database (on $OCTO_TEST_POSTGRES when set, else on one server started
// lazily per test process), and Main stops that server after the tests.
//
// The binaries are found in $OCTO_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else pg_config
// --bindir. Without them URL skips the test with a message saying how to install them, and fails it
// instead when $CI is set: CI must never skip.
//
// PostgreSQL refuses to run as root; as root the server runs as the unprivileged user nobody, which owns the
// data directory. The server is started directly (not through pg_ctl) as a child that the kernel kills when
// the test process dies, so a crashed test leaves no server behind. It is tuned for tests: no fsync, no full
// page writes, 300 connections.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a private PostgreSQL server.
type Server struct {
	dir       string // the directory given to Start: data/ and postgres.log live in it
	socketDir string // where the Unix socket is; removed by Stop when it is not dir
	port      int
	cmd       *exec.Cmd
	exited    chan struct{} // closed when the server process has been waited for
	waitErr   error         // set before exited is closed
}

// ErrNoBinaries says no PostgreSQL binaries were found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries found")

// startTimeout bounds how long Start waits for the server to accept connections.
const startTimeout = 60 * time.Second

// Start initializes a database cluster in dir/data and starts a server on it, listening on a Unix socket (in
// dir when its path is short enough, else in a new temp directory) and on 127.0.0.1 at a free port. dir must
// exist; as root, it is given to nobody, and the temp directories above it are made traversable (search
// only) so that nobody can reach it. Stop the server with Stop.
func Start(dir string) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	cred, err := credential(dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb in %s: %w\n%s", data, err, out)
	}
	s := &Server{dir: dir, socketDir: dir}
	// A Unix socket path holds at most ~107 bytes: "/.s.PGSQL.65535" needs 15 of them.
	if len(dir) > 80 {
		if s.socketDir, err = os.MkdirTemp("/tmp", "pg"); err != nil {
			return nil, fmt.Errorf("making the socket directory: %w", err)
		}
		if cred != nil {
			if err := os.Chown(s.socketDir, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("giving the socket directory to uid %d: %w", cred.Uid, err)
			}
		}
	}
	// The free port may be taken between the probe and the server's bind: try a few.
	for attempt := 0; ; attempt++ {
		if err = s.start(bin, data, cred); err == nil {
			return s, nil
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			s.removeSocketDir()
			return nil, err
		}
	}
}

func (s *Server) start(bin, data string, cred *syscall.Credential) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating the server log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", s.socketDir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "synchronous_commit=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Pdeathsig: the server dies with the test process, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd, s.port, s.exited = cmd, port, make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.adminURL())
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-s.exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres exited at start (%v): %s", s.waitErr, out)
		case <-ctx.Done():
			_ = s.Stop()
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres did not accept connections within %s: %w\n%s", startTimeout, err, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops the server (a fast shutdown: sessions are ended) and waits for it to exit.
func (s *Server) Stop() error {
	defer s.removeSocketDir()
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("stopping postgres: %w", err)
	}
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("stopping postgres: it did not stop within a minute; killed it")
	}
	return nil
}

func (s *Server) removeSocketDir() {
	if s.socketDir != s.dir {
		_ = os.RemoveAll(s.socketDir)
	}
}

// URL returns the URL of database name on the server, over TCP on 127.0.0.1.
func (s *Server) URL(name string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path: "/" + name, RawQuery: "sslmode=disable"}
	return u.String()
}

func (s *Server) adminURL() string { return s.URL("postgres") }

// CreateDatabase creates an empty database and returns its URL.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	if err := createDatabase(ctx, s.adminURL(), name); err != nil {
		return "", err
	}
	return s.URL(name), nil
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// BinDir returns the directory of the PostgreSQL binaries: $OCTO_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin, else pg_config --bindir. The error wraps ErrNoBinaries.
func BinDir() (string, error) {
	if d := os.Getenv("OCTO_PG_BIN"); d != "" {
		if !hasBinaries(d) {
			return "", fmt.Errorf("%w: OCTO_PG_BIN=%s has no initdb and postgres", ErrNoBinaries, d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if hasBinaries(d) {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); hasBinaries(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in $OCTO_PG_BIN, /usr/lib/postgresql/*/bin and pg_config --bindir): "+
		"install them (Debian: apt-get install -y postgresql) or set OCTO_TEST_POSTGRES to the URL of a server "+
		"where tests may create databases", ErrNoBinaries)
}

func hasBinaries(dir string) bool {
	for _, b := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

// version is the major version in /usr/lib/postgresql/<version>/bin.
func version(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// credential returns the credential to run PostgreSQL with: nil when not root; as root, nobody's, after
// giving dir to nobody and making the temp directories above dir traversable for it.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	uid, gid := uint32(65534), uint32(65534)
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
		if n, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(n)
		}
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("giving %s to uid %d for PostgreSQL (which refuses to run as root): %w", dir, uid, err)
	}
	// Only directories below the temp directory are opened up, and only for search (o+x), never listing.
	tmp, err := filepath.Abs(os.TempDir())
	if err != nil {
		return nil, fmt.Errorf("finding the temp directory: %w", err)
	}
	for d := filepath.Dir(dir); strings.HasPrefix(d, tmp+string(filepath.Separator)); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("making %s traversable for PostgreSQL: %w", d, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return nil, fmt.Errorf("making %s traversable for PostgreSQL: %w", d, err)
			}
		}
	}
	return &syscall.Credential{Uid: uid, Gid: gid}, nil
}

// randomName returns a database name unique enough for one server's lifetime.
func randomName() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "octo_" + hex.EncodeToString(b)
}
