package main

import (
	"fmt"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// pauseCommand is the hidden placeholder of the chart's warm pool (scriptPods.warmPool): its pods run it from
// the worker image to hold room for script pods. It does nothing until SIGTERM or SIGINT (preemption, scale
// down) and then exits 0 at once, so a preempting script pod never waits for it.
// pauseReady is the line pause prints once SIGTERM ends it (and no longer kills the process).
const pauseReady = "holding room for a script pod until SIGTERM"

func pauseCommand() *cli.Command {
	return &cli.Command{
		Name:   "pause",
		Usage:  "sleep until SIGTERM (the warm pool's placeholder pods)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			fmt.Fprintln(c.App.Writer, pauseReady)
			<-ctx.Done()
			return nil
		},
	}
}
