package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// The client commands: pool, token, ops, deployments, workers (submit and deploy live in cmd_submit.go).
// Each takes the connection flags below and talks to the dispatch server with dispatch/client.

func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Value: "http://127.0.0.1:8080", EnvVars: []string{"OCTO_SERVER"}, Usage: "dispatch server URL"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"OCTO_TOKEN"}, Usage: "admin token"},
		&cli.StringFlag{Name: "ca-cert", EnvVars: []string{"OCTO_CA_CERT"}, Usage: "PEM file of the CA that signed the server's certificate"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"},
	}
}

// withClientFlags adds the connection flags to every leaf command under cmd.
func withClientFlags(cmd *cli.Command) *cli.Command {
	if len(cmd.Subcommands) == 0 {
		cmd.Flags = append(cmd.Flags, clientFlags()...)
	}
	for _, sub := range cmd.Subcommands {
		withClientFlags(sub)
	}
	return cmd
}

func newClient(c *cli.Context) (*client.Client, error) {
	if o := c.String("output"); o != "table" && o != "json" {
		return nil, cli.Exit(fmt.Sprintf("--output %q: use table or json", o), 2)
	}
	if c.String("token") == "" {
		return nil, cli.Exit("no token: pass --token or set OCTO_TOKEN to the admin token (printed at the server's first start)", 2)
	}
	cl, err := client.New(client.Config{Server: c.String("server"), Token: c.String("token"), CACertFile: c.String("ca-cert"),
		UserAgent: "octo-worker/" + c.App.Version})
	if err != nil {
		return nil, cli.Exit("--server: "+err.Error(), 2)
	}
	return cl, nil
}

// output prints v as JSON with -o json (which escapes control characters itself), else calls table with a
// tab writer that escapes them (see escape.go).
func output(c *cli.Context, v any, table func(w io.Writer)) error {
	if c.String("output") == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	table(escapingWriter{tw})
	return tw.Flush()
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return when(*t)
}

// oneLine folds a multi-line message onto one table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func exitText(code *int) string {
	if code == nil {
		return "-"
	}
	return fmt.Sprint(*code)
}

// clientAction is a command's action that talks to the server: it builds the client from the connection
// flags, then runs act.
func clientAction(act func(c *cli.Context, cl *client.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		return act(c, cl)
	}
}

// idAction is clientAction for a command on one object: it requires exactly one argument (what names it in
// the usage error), checked before the client is built, and passes it to act.
func idAction(what string, act func(c *cli.Context, cl *client.Client, id string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit(fmt.Sprintf("%s: give exactly one %s (see --help)", c.Command.FullName(), what), 2)
		}
		return clientAction(func(c *cli.Context, cl *client.Client) error { return act(c, cl, c.Args().First()) })(c)
	}
}

// ---- pool ----

func poolCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "pool",
		Usage: "create and list worker pools",
		Subcommands: []*cli.Command{
			{Name: "create", Usage: "create a pool", ArgsUsage: "NAME",
				Flags: []cli.Flag{&cli.StringFlag{Name: "description", Usage: "what the pool is for"}},
				Action: idAction("pool name", func(c *cli.Context, cl *client.Client, name string) error {
					p, err := cl.CreatePool(c.Context, name, c.String("description"))
					if err != nil {
						return err
					}
					return output(c, p, func(w io.Writer) { fmt.Fprintf(w, "created pool %s\n", p.Name) })
				})},
			{Name: "list", Usage: "list pools", Action: clientAction(func(c *cli.Context, cl *client.Client) error {
				pools, err := cl.Pools(c.Context)
				if err != nil {
					return err
				}
				return output(c, pools, func(w io.Writer) {
					fmt.Fprintln(w, "NAME\tCREATED\tDESCRIPTION")
					for _, p := range pools {
						fmt.Fprintf(w, "%s\t%s\t%s\n", esc(p.Name), when(p.CreatedAt), esc(p.Description))
					}
				})
			})},
		},
	})
}

// ---- token ----

func tokenCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "token",
		Usage: "manage registration tokens (workers register with one)",
		Subcommands: []*cli.Command{
			{Name: "create", Usage: "create a registration token for one or more pools (the secret is shown once)",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "pool", Usage: "pool the token may register workers into (repeatable)", Required: true},
					&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, Usage: "how long the token can be used to register"},
				},
				Action: clientAction(func(c *cli.Context, cl *client.Client) error {
					t, err := cl.CreateToken(c.Context, c.StringSlice("pool"), c.Duration("ttl"))
					if err != nil {
						return err
					}
					return output(c, t, func(w io.Writer) {
						fmt.Fprintf(w, "%s\n", t.Token)
						fmt.Fprint(c.App.ErrWriter, escText(fmt.Sprintf("registration token %s for pools %s, expires %s; the secret above is shown only once\n",
							t.ID, strings.Join(t.Pools, ","), when(t.ExpiresAt))))
					})
				})},
			{Name: "list", Usage: "list registration tokens", Action: clientAction(func(c *cli.Context, cl *client.Client) error {
				tokens, err := cl.Tokens(c.Context)
				if err != nil {
					return err
				}
				return output(c, tokens, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tPOOLS\tEXPIRES\tREVOKED")
					for _, t := range tokens {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, strings.Join(t.Pools, ","), when(t.ExpiresAt), whenPtr(t.RevokedAt))
					}
				})
			})},
			{Name: "revoke", Usage: "revoke a registration token (registered workers keep working)", ArgsUsage: "ID",
				Action: idAction("token id", func(c *cli.Context, cl *client.Client, id string) error {
					t, err := cl.RevokeToken(c.Context, id)
					if err != nil {
						return err
					}
					return output(c, t, func(w io.Writer) { fmt.Fprintf(w, "revoked %s\n", t.ID) })
				})},
		},
	})
}

// ---- ops ----

func opsCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "ops",
		Usage: "list, show, follow and cancel operations",
		Subcommands: []*cli.Command{
			{Name: "list", Usage: "list operations, newest first",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "state", Usage: "queued, leased, running, succeeded, failed, cancelled, timed-out or lost"},
					&cli.StringFlag{Name: "pool", Usage: "only this pool"},
					&cli.StringFlag{Name: "worker", Usage: "only this worker id"},
					&cli.StringFlag{Name: "deployment", Usage: "only this deployment id"},
					&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most this many (1..1000)"},
				},
				Action: clientAction(func(c *cli.Context, cl *client.Client) error {
					ops, err := cl.Operations(c.Context, client.ListOptions{State: api.State(c.String("state")), Pool: c.String("pool"),
						WorkerID: c.String("worker"), DeploymentID: c.String("deployment"), Limit: c.Int("limit")})
					if err != nil {
						return err
					}
					return output(c, ops, func(w io.Writer) { opsTable(w, ops) })
				})},
			{Name: "show", Usage: "show one operation (sensitive values masked)", ArgsUsage: "ID", Action: idAction("operation id", func(c *cli.Context, cl *client.Client, id string) error {
				op, err := cl.Operation(c.Context, id)
				if err != nil {
					return err
				}
				return output(c, op, func(w io.Writer) { showOperation(w, op) })
			})},
			{Name: "logs", Usage: "print an operation's log; --follow waits until it ends and exits with its exit code", ArgsUsage: "ID",
				Description: "Lines print as the script wrote them, terminal sequences (colours) included, as kubectl logs prints\n" +
					"them; every other text from the server (names, messages, the worker's notes) is printed with control\n" +
					"characters escaped (\\x1b). Pipe the log through cat -v to see a line's control characters.",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "wait for more lines until the operation ends"},
					&cli.Int64Flag{Name: "after", Usage: "start after this log position (pos)"},
				},
				Action: idAction("operation id", func(c *cli.Context, cl *client.Client, id string) error {
					end, err := printLogs(c, cl, id, c.Int64("after"), c.Bool("follow"), "")
					if err != nil || !c.Bool("follow") {
						return err
					}
					return endExit(c, id, end)
				})},
			{Name: "cancel", Usage: "cancel an operation (a running one stops at its worker's next heartbeat)", ArgsUsage: "ID",
				Action: idAction("operation id", func(c *cli.Context, cl *client.Client, id string) error {
					op, err := cl.Cancel(c.Context, id)
					if err != nil {
						return err
					}
					return output(c, op, func(w io.Writer) {
						if op.State == api.StateCancelled {
							fmt.Fprintf(w, "cancelled %s\n", op.ID)
						} else {
							fmt.Fprintf(w, "asked the worker running %s to stop; it becomes cancelled when the worker confirms\n", op.ID)
						}
					})
				})},
		},
	})
}

func opsTable(w io.Writer, ops []api.Operation) {
	fmt.Fprintln(w, "ID\tSTATE\tEXIT\tPOOL\tNAME\tWORKER\tCREATED\tMESSAGE")
	for _, op := range ops {
		state := string(op.State)
		if op.CancelRequested && !op.State.Terminal() {
			state += " (cancelling)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(op.ID), esc(state), exitText(op.ExitCode), esc(op.Pool), esc(dash(op.Name)),
			esc(dash(op.WorkerID)), when(op.CreatedAt), esc(oneLine(op.Message)))
	}
}

func showOperation(w io.Writer, op api.Operation) {
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, esc(v)) }
	row("ID", op.ID)
	row("Name", dash(op.Name))
	if op.DeploymentID != "" {
		row("Deployment", fmt.Sprintf("%s (step %d)", op.DeploymentID, op.Step))
	}
	row("Pool", op.Pool)
	row("State", string(op.State))
	row("Exit code", exitText(op.ExitCode))
	row("Message", dash(op.Message))
	row("Worker", dash(op.WorkerID))
	row("Image", dash(op.Image))
	row("Syntax", op.Syntax)
	if op.Requests != nil {
		row("Requests", fmt.Sprintf("cpu=%s memory=%s", dash(op.Requests.CPU), dash(op.Requests.Memory)))
	}
	if op.TimeoutSeconds > 0 {
		row("Timeout", (time.Duration(op.TimeoutSeconds) * time.Second).String())
	}
	if len(op.Capabilities) > 0 {
		row("Capabilities", strings.Join(op.Capabilities, ","))
	}
	if op.Profile != "" {
		row("Profile", op.Profile)
	}
	for _, p := range op.Packages {
		row("Package", p)
	}
	row("Created", when(op.CreatedAt))
	row("Started", whenPtr(op.StartedAt))
	row("Finished", whenPtr(op.FinishedAt))
	if u := op.Usage; u != nil {
		row("Usage", fmt.Sprintf("peak memory %s, %.2f CPU seconds (%s)", bytesText(float64(u.PeakMemoryBytes)), u.CPUSeconds, u.Source))
	}
	for _, v := range op.Variables {
		row("Variable", v.Name+"="+v.Value)
	}
	for _, f := range op.Files {
		row("File", fmt.Sprintf("%s (%d bytes)", f.Path, len(f.Content)))
	}
	fmt.Fprintf(w, "Script:\n%s\n", op.Script) // the writer keeps its lines and tabs, escapes the rest
}

// ---- deployments ----

func deploymentsCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "deployments",
		Usage: "list, show and cancel deployments (submit one with `octo-worker deploy`)",
		Subcommands: []*cli.Command{
			{Name: "list", Usage: "list deployments, newest first",
				Flags: []cli.Flag{&cli.IntFlag{Name: "limit", Value: 20, Usage: "at most this many (1..1000)"}},
				Action: clientAction(func(c *cli.Context, cl *client.Client) error {
					deps, err := cl.Deployments(c.Context, c.Int("limit"))
					if err != nil {
						return err
					}
					return output(c, deps, func(w io.Writer) {
						fmt.Fprintln(w, "ID\tSTATE\tSTEPS\tNAME\tCREATED")
						for _, d := range deps {
							fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", esc(d.ID), d.State, len(d.Operations), esc(d.Name), when(d.CreatedAt))
						}
					})
				})},
			{Name: "show", Usage: "show a deployment and its steps", ArgsUsage: "ID", Action: idAction("deployment id", func(c *cli.Context, cl *client.Client, id string) error {
				d, err := cl.Deployment(c.Context, id)
				if err != nil {
					return err
				}
				return output(c, d, func(w io.Writer) {
					fmt.Fprintf(w, "%s %q: %s\n\n", d.ID, d.Name, d.State)
					opsTable(w, d.Operations)
				})
			})},
			{Name: "cancel", Usage: "cancel a deployment's remaining steps", ArgsUsage: "ID", Action: idAction("deployment id", func(c *cli.Context, cl *client.Client, id string) error {
				d, err := cl.CancelDeployment(c.Context, id)
				if err != nil {
					return err
				}
				return output(c, d, func(w io.Writer) { fmt.Fprintf(w, "deployment %s: %s\n", d.ID, d.State) })
			})},
		},
	})
}

// ---- workers ----

func workersCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "workers",
		Usage: "list workers and their state, show and check one, drain and remove them, set the version they should run",
		Subcommands: []*cli.Command{
			{Name: "list", Usage: "list registered workers", Action: clientAction(func(c *cli.Context, cl *client.Client) error {
				ws, err := cl.Workers(c.Context)
				if err != nil {
					return err
				}
				return output(c, ws, func(w io.Writer) { workersTable(w, ws) })
			})},
			workersShowCommand(),
			workersCheckCommand(),
			{Name: "drain", Usage: "ask a worker to stop taking operations (--resume to undo)", ArgsUsage: "ID",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "resume", Usage: "let the worker take operations again"}},
				Action: idAction("worker id", func(c *cli.Context, cl *client.Client, id string) error {
					wk, err := cl.DrainWorker(c.Context, id, !c.Bool("resume"))
					if err != nil {
						return err
					}
					return output(c, wk, func(w io.Writer) {
						if wk.DrainRequested {
							fmt.Fprintf(w, "worker %s drains from its next heartbeat\n", wk.ID)
						} else {
							fmt.Fprintf(w, "worker %s takes operations again\n", wk.ID)
						}
					})
				})},
			{Name: "remove", Usage: "remove a worker: its token stops working at once, the operations it holds become lost (never re-run)", ArgsUsage: "ID",
				Description: "Use it for a worker whose cluster is gone, or one that could not deregister itself when its Helm release was\n" +
					"uninstalled. The operations the worker held end as lost: their result is unknown, because its Jobs may still be\n" +
					"running; a deployment with a lost step stops. Queued operations stay queued for the pool's other workers.",
				Action: idAction("worker id", func(c *cli.Context, cl *client.Client, id string) error {
					rm, err := cl.RemoveWorker(c.Context, id)
					if err != nil {
						return err
					}
					return output(c, rm, func(w io.Writer) { printRemoval(w, rm) })
				})},
			{Name: "upgrade", Usage: "set the worker version every worker should run, uploading its chart archive",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "version", Usage: "worker version", Required: true},
					&cli.StringFlag{Name: "chart", Usage: "chart archive (.tgz from `helm package`) for the version; omit if uploaded before"},
				},
				Action: clientAction(func(c *cli.Context, cl *client.Client) error {
					if path := c.String("chart"); path != "" {
						data, err := os.ReadFile(path)
						if err != nil {
							return cli.Exit("--chart: "+err.Error(), 2)
						}
						if _, err := cl.UploadChart(c.Context, c.String("version"), data); err != nil {
							return err
						}
					}
					dv, err := cl.SetDesiredVersion(c.Context, c.String("version"))
					if err != nil {
						return err
					}
					return output(c, dv, func(w io.Writer) {
						fmt.Fprintf(w, "workers will upgrade to %s (chart sha256 %s) at their next heartbeat\n", dv.Version, dv.ChartSHA256)
					})
				})},
		},
	})
}

// printRemoval says what removing a worker did.
func printRemoval(w io.Writer, rm api.WorkerRemoval) {
	fmt.Fprintf(w, "removed worker %s (%s): its token no longer works\n", esc(rm.Worker.Name), esc(rm.Worker.ID))
	if len(rm.Lost) == 0 {
		fmt.Fprintln(w, "it held no operations")
		return
	}
	fmt.Fprintf(w, "%s it held ended as lost (result unknown; its Jobs may still be running): %s\n",
		plural(len(rm.Lost), "operation", "operations"), esc(strings.Join(rm.Lost, ", ")))
	if len(rm.Cancelled) > 0 {
		fmt.Fprintf(w, "%s after a lost one cancelled: %s\n", plural(len(rm.Cancelled), "deployment step", "deployment steps"),
			esc(strings.Join(rm.Cancelled, ", ")))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
