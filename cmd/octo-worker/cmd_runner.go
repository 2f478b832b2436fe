package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/jobrunner/podrunner"
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
					return podrunner.Install(c.Args().First())
				},
			},
			{
				Name:  "run",
				Usage: "run the operation described by --spec, sealing its output with --key",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "spec", Value: podrunner.OperationDir + "/" + podrunner.SpecKey, Usage: "the operation spec (JSON) from the operation's Secret"},
					&cli.StringFlag{Name: "key", Value: podrunner.OperationDir + "/" + podrunner.SealingKeyKey, Usage: "the sealing key from the operation's Secret"},
					&cli.StringFlag{Name: "workdir", Value: podrunner.WorkDir, Usage: "the script's working directory"},
				},
				Action: func(c *cli.Context) error {
					ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
					defer stop()
					code := podrunner.Main(ctx, c.String("spec"), c.String("key"), c.String("workdir"), c.App.Writer, c.App.ErrWriter)
					if code != 0 {
						// No message: the code is in the end-of-stream marker, and the runner prints nothing unsealed.
						return cli.Exit("", code)
					}
					return nil
				},
			},
		},
	}
}
