package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
	"github.com/octo-worker/octo-worker/dispatch/server"
)

// serverCommand is `octo-worker server`: the dispatch server on SQLite or PostgreSQL (--db).
func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the dispatch server (HTTP JSON API under /api/v1, SQLite or PostgreSQL storage)",
		Description: "Holds pools, registration tokens, workers, operations, deployments and their logs in one SQLite file,\n" +
			"or, when --db is a postgres:// URL, in that PostgreSQL database (migrated at start, once however many\n" +
			"servers start together).\n" +
			"The admin token comes from --admin-token / OCTO_TOKEN; without it, the first start generates one and\n" +
			"prints it once (only its SHA-256 is stored). GET /api/v1/openapi.json describes the API; PROTOCOL.md\n" +
			"explains it. Stops gracefully on SIGINT/SIGTERM.\n\n" +
			"History does not grow forever: at start and then hourly, operations (with their logs) and deployments\n" +
			"that ended longer ago than --retention are deleted, and the file gives the space back. Operations and\n" +
			"deployments that have not ended are kept however old. On disk, the database, its WAL and shared-memory\n" +
			"files are made 0600 (with a warning if they were not), and a sensitive variable's value is erased from\n" +
			"all of them, free space included, within a second of its operation's end.\n\n" +
			"Packages (`octo-worker package push`) are kept as files named by their sha256 in --packages-dir; retention\n" +
			"deletes those created longer ago than --retention that no operation references.",
		Subcommands: []*cli.Command{serverBackupCommand()},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", EnvVars: []string{"OCTO_LISTEN"}, Usage: "address to listen on"},
			&cli.StringFlag{Name: "db", Value: "octo-worker.db", EnvVars: []string{"OCTO_DB"}, Usage: "SQLite database file (created if missing, mode 0600), or a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL to keep everything in PostgreSQL (several servers may share one database)"},
			&cli.StringFlag{Name: "admin-token", EnvVars: []string{"OCTO_TOKEN"}, Usage: "admin token (at least 16 characters); default: keep the stored one, or generate and print one on first start"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"OCTO_TLS_CERT"}, Usage: "PEM certificate (chain) to serve HTTPS; needs --tls-key"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"OCTO_TLS_KEY"}, Usage: "PEM private key for --tls-cert"},
			&cli.DurationFlag{Name: "lease-ttl", Value: 2 * time.Minute, EnvVars: []string{"OCTO_LEASE_TTL"}, Usage: "how long a lease lives without a heartbeat; an operation whose lease expires becomes lost (never re-run)"},
			&cli.DurationFlag{Name: "retention", Value: 30 * 24 * time.Hour, EnvVars: []string{"OCTO_RETENTION"}, Usage: "delete operations (with their logs) and deployments that ended longer ago than this, at start and then hourly; 0 keeps everything"},
			&cli.StringFlag{Name: "packages-dir", EnvVars: []string{"OCTO_PACKAGES_DIR"}, Usage: "directory that keeps package content, by sha256 (created 0700; default: DB.packages beside a SQLite database; with a postgres:// --db, " + urlPackagesDir + " in the working directory: servers sharing a database need a shared directory)"},
			&cli.StringFlag{Name: "max-package-size", Value: "2Gi", EnvVars: []string{"OCTO_MAX_PACKAGE_SIZE"}, Usage: "largest package the server takes (a quantity: 500Mi, 2Gi, 10G); larger uploads get 413"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: 5 * time.Second, EnvVars: []string{"OCTO_HEARTBEAT_INTERVAL"}, Usage: "heartbeat interval told to workers (at most half the lease TTL)"},
		},
		Action: runServer,
	}
}

func runServer(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	cfg := server.Config{LeaseTTL: c.Duration("lease-ttl"), HeartbeatInterval: c.Duration("heartbeat-interval")}
	if err := cfg.Validate(); err != nil {
		return cli.Exit("--lease-ttl / --heartbeat-interval: "+err.Error(), 2)
	}
	maxPackage, err := resource.ParseQuantity(c.String("max-package-size"))
	if err != nil || maxPackage.Sign() <= 0 {
		return cli.Exit(fmt.Sprintf("--max-package-size: %q is not a positive size: give a quantity such as 500Mi or 2Gi", c.String("max-package-size")), 2)
	}
	cfg.MaxPackageSize = maxPackage.Value()
	keep := c.Duration("retention")
	if keep < 0 {
		return cli.Exit(fmt.Sprintf("--retention: %s is negative; give how long to keep what ended (e.g. 720h for 30 days), or 0 to keep everything", keep), 2)
	}
	var tlsConfig *tls.Config
	certFile, keyFile := c.String("tls-cert"), c.String("tls-key")
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return cli.Exit(fmt.Sprintf("--tls-cert/--tls-key: loading the key pair: %v", err), 2)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case certFile != "":
		return cli.Exit("--tls-cert needs --tls-key", 2)
	case keyFile != "":
		return cli.Exit("--tls-key needs --tls-cert", 2)
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, defaultDir, err := openStore(ctx, c.String("db"), log)
	if err != nil {
		return err
	}
	defer st.Close()
	dir := c.String("packages-dir")
	if dir == "" {
		dir = defaultDir
	}
	if cfg.Packages, err = pkgfiles.Open(dir); err != nil {
		return fmt.Errorf("--packages-dir: %w", err)
	}
	if err := cfg.Packages.Bind(ctx, st); err != nil {
		return fmt.Errorf("--packages-dir: %w", err)
	}
	srv, err := server.New(st, cfg, log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait() // the retention stops before the store closes
	if keep > 0 {
		rctx, stopRetention := context.WithCancel(ctx)
		defer stopRetention()
		wg.Go(func() { _ = server.NewRetention(st, keep, log).WithPackages(st, cfg.Packages).Start(rctx) })
	} else {
		log.Info("--retention 0: keeping every operation and deployment")
	}
	// Listen before the admin token is made: a server that cannot listen generates no token, and once the
	// token is shown the server accepts connections.
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	generated, err := srv.InitAdminToken(ctx, c.String("admin-token"))
	if err != nil {
		ln.Close()
		return fmt.Errorf("--admin-token: %w", err)
	}
	if generated != "" {
		fmt.Fprintf(c.App.Writer, "Generated the admin token. It is shown only this once; keep it (OCTO_TOKEN):\n%s\n", generated)
	}
	return srv.Serve(ctx, ln, tlsConfig)
}
