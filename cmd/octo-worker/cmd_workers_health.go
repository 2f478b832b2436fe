package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// The health side of `workers`: list's STATE column, show and check.

// maxListMessage clips a message in `workers list`, so a long one does not push the table off the screen;
// `workers show` prints it whole.
const maxListMessage = 80

// clip cuts s to max runes, marking the cut.
func clip(s string, max int) string {
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// workerState is a worker's state for a table: the server's judgement, and a drain.
func workerState(wk api.Worker) string {
	state := string(wk.State)
	if state == "" { // a server older than worker states
		state = "healthy"
		if !wk.Healthy {
			state = "unhealthy"
		}
	}
	if wk.Draining || wk.DrainRequested {
		state += " (draining)"
	}
	return state
}

// workerMessage is what a table says about a worker: its first failing check, else its own message.
func workerMessage(wk api.Worker) string {
	if wk.State != api.WorkerUnavailable {
		for _, c := range wk.Checks {
			if !c.OK {
				return c.Name + ": " + c.Message
			}
		}
	}
	return wk.HealthMessage
}

func workersTable(w io.Writer, ws []api.Worker) {
	// MESSAGE is last: a long one (a failed check's advice) does not widen the other columns.
	fmt.Fprintln(w, "ID\tNAME\tPOOLS\tVERSION\tRUNNING\tSTATE\tLAST HEARTBEAT\tCAPABILITIES\tMESSAGE")
	for _, wk := range ws {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", esc(wk.ID), esc(wk.Name), esc(strings.Join(wk.Pools, ",")), esc(wk.Version),
			wk.Running, wk.Capacity, workerState(wk), when(wk.LastHeartbeat), esc(dash(strings.Join(wk.Capabilities, ","))),
			dash(clip(esc(oneLine(workerMessage(wk))), maxListMessage)))
	}
}

func showWorker(w io.Writer, wk api.Worker) {
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("ID", esc(wk.ID))
	row("Name", esc(wk.Name))
	row("State", workerState(wk))
	row("Message", dash(esc(wk.HealthMessage)))
	row("Pools", esc(strings.Join(wk.Pools, ",")))
	row("Version", esc(wk.Version))
	row("Running", fmt.Sprintf("%d of capacity %d", wk.Running, wk.Capacity))
	row("Capabilities", esc(dash(strings.Join(wk.Capabilities, ","))))
	row("Last heartbeat", when(wk.LastHeartbeat))
	row("Last check", when(wk.LastCheck))
	row("Registered", when(wk.RegisteredAt))
	if len(wk.Checks) == 0 {
		row("Checks", "- (none reported)")
	}
	for _, c := range wk.Checks {
		result := "OK"
		if !c.OK {
			result = "FAIL"
		}
		line := result + "\t" + esc(c.Name)
		if c.Message != "" {
			line += ": " + esc(c.Message)
		}
		row("Check", line)
	}
}

func workersShowCommand() *cli.Command {
	return &cli.Command{Name: "show", Usage: "show a worker: its state, every check of its last report and when it ran them", ArgsUsage: "ID",
		Action: idAction("worker id", func(c *cli.Context, cl *client.Client, id string) error {
			wk, err := cl.Worker(c.Context, id)
			if err != nil {
				return err
			}
			return output(c, wk, func(w io.Writer) { showWorker(w, wk) })
		})}
}

func workersCheckCommand() *cli.Command {
	return &cli.Command{Name: "check", Usage: "run a health check on a worker now: a tiny script pod; prints its output and how long it took", ArgsUsage: "ID",
		Description: "The worker runs a small script (who it runs as, the kernel, the date) in its default image, as its next\n" +
			"operation and even when its own checks fail, so you see whether a script pod is scheduled, starts and logs.\n" +
			"It still needs a free slot. The exit code is the script's (non-zero when it did not succeed).",
		Action: idAction("worker id", func(c *cli.Context, cl *client.Client, id string) error {
			op, err := cl.CheckWorker(c.Context, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "health check %s queued for worker %s\n", op.ID, id)
			end, err := printLogs(c, cl, op.ID, 0, true, "")
			if err != nil {
				return err
			}
			if done, err := cl.Operation(c.Context, op.ID); err == nil {
				fmt.Fprintln(c.App.ErrWriter, checkTimes(done))
			}
			return endExit(c, op.ID, end)
		})}
}

// checkTimes says how long a health check took: queued until its pod ran, and running until the end.
func checkTimes(op api.Operation) string {
	if op.StartedAt == nil || op.FinishedAt == nil {
		if op.FinishedAt != nil {
			return fmt.Sprintf("took %s from queued to %s (it never ran)", op.FinishedAt.Sub(op.CreatedAt).Round(time.Millisecond), op.State)
		}
		return "took: unknown (the operation has not ended)"
	}
	return fmt.Sprintf("took %s: %s queued until its pod ran, %s running",
		op.FinishedAt.Sub(op.CreatedAt).Round(time.Millisecond), op.StartedAt.Sub(op.CreatedAt).Round(time.Millisecond),
		op.FinishedAt.Sub(*op.StartedAt).Round(time.Millisecond))
}
