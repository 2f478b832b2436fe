package main

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/jobrunner/runner"
)

// runnerCommand is the hidden in-pod runner. The script pod's init container runs "runner install" from the
// worker image to copy this binary into an emptyDir; the script container then runs "runner run" from there.
// It writes only sealed records to stdout; see package runner.
func runnerCommand() *cli.Command {
	return &cli.Command{
		Name:   "runner",
		Usage:  "run an operation's script inside its pod (used by the worker's Jobs)",
		Hidden: true,
		Subcommands: []*cli.Command{
			{
				Name:      "install",
				Usage:     "copy this binary to DEST (the init container of a script pod)",
				ArgsUsage: "DEST",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("runner install: give the destination path, e.g. /octo/bin/octo-worker", 2)
					}
					return runner.Install(c.Args().First())
				},
			},
			{
				Name:  "run",
				Usage: "run the operation described by --spec, sealing its output with --key",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "spec", Value: "/octo/operation/operation.json", Usage: "the operation spec (JSON) from the operation's Secret"},
					&cli.StringFlag{Name: "key", Value: "/octo/operation/sealing-key", Usage: "the sealing key from the operation's Secret"},
					&cli.StringFlag{Name: "workdir", Value: "/octo/work", Usage: "the script's working directory"},
				},
				Action: func(c *cli.Context) error {
					spec, key, err := runner.LoadSpec(c.String("spec"), c.String("key"))
					if err != nil {
						return cli.Exit(fmt.Sprintf("runner: %v", err), runner.ExitRunnerError)
					}
					r, err := runner.New(spec, key, c.String("workdir"), c.App.Writer)
					if err != nil {
						return cli.Exit(fmt.Sprintf("runner: %v", err), runner.ExitRunnerError)
					}
					ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
					defer stop()
					code, err := r.Run(ctx)
					if err != nil {
						return cli.Exit(fmt.Sprintf("runner: %v", err), runner.ExitRunnerError)
					}
					if code != 0 {
						// Printed on stderr after the end-of-stream marker; the worker stops reading at the marker.
						return cli.Exit(fmt.Sprintf("script exited with code %d", code), code)
					}
					return nil
				},
			},
		},
	}
}
