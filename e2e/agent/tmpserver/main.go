// Temporary: stands in for `octo-worker server` until cmd_server.go lands. Not committed.
package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/server"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "")
	db := flag.String("db", "x.db", "")
	tok := flag.String("admin-token", "", "")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	st, err := sqlite.Open(ctx, *db)
	if err != nil {
		panic(err)
	}
	s, err := server.New(st, server.Config{}, logrus.New())
	if err != nil {
		panic(err)
	}
	if _, err := s.InitAdminToken(ctx, *tok); err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		panic(err)
	}
	if err := s.Serve(ctx, ln, nil); err != nil {
		logrus.Error(err)
		os.Exit(1)
	}
}
