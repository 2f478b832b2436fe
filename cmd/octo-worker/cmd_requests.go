package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// requestsCommand is `octo-worker requests advise`: script pod requests recommended from measured usage.
func requestsCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "requests",
		Usage: "script pod requests, from what operations used",
		Subcommands: []*cli.Command{{
			Name:  "advise",
			Usage: "recommend scriptPods.resources.requests (or one step's requests) from the peak memory and CPU of ended operations",
			Description: "Each operation's runner measures its script's peak memory and CPU seconds (its container's cgroup when it\n" +
				"can read its own, else the largest process's peak). The advice reads the newest ended operations of a pool\n" +
				"(or of one step name): memory at the 90th percentile of peaks plus 20%, CPU at the median of average cores.\n" +
				"It prints the numbers behind it and the command that applies it.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "pool", Value: "default", Usage: "the worker pool"},
				&cli.StringFlag{Name: "step", Usage: "only operations with this name (a deployment step's name); the advice is then that step's own requests"},
				&cli.StringFlag{Name: "release", Value: "octo-worker", Usage: "Helm release of the workers, for the printed command"},
				&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "octo-worker", Usage: "release namespace, for the printed command"},
				&cli.StringFlag{Name: "chart", Usage: "chart reference for the printed command (default: the archive `octo-worker install` writes)"},
			},
			Action: clientAction(func(c *cli.Context, cl *client.Client) error {
				a, err := cl.RequestsAdvice(c.Context, c.String("pool"), c.String("step"))
				if err != nil {
					return err
				}
				chart := c.String("chart")
				if chart == "" {
					chart = chartgen.InstallCommand{}.ChartArchive(c.App.Version)
				}
				return output(c, a, func(w io.Writer) { adviceText(w, a, c.String("release"), c.String("namespace"), chart) })
			}),
		}},
	})
}

// adviceText prints the advice, the distribution behind it and how to apply it.
func adviceText(w io.Writer, a api.RequestsAdvice, release, namespace, chart string) {
	scope := "every operation"
	if a.Step != "" {
		scope = "operations named " + esc(a.Step)
	}
	fmt.Fprintf(w, "Pool:\t%s (%s)\n", esc(a.Pool), scope)
	fmt.Fprintf(w, "Samples:\t%d ended operations with a measured usage (the newest %d at most)\n", a.Samples, api.MaxAdviceSamples)
	if a.Samples > 0 {
		m := a.Memory
		fmt.Fprintf(w, "Peak memory:\tmin %s\tmedian %s\tp90 %s\tmax %s\n", bytesText(m.Min), bytesText(m.Median), bytesText(m.P90), bytesText(m.Max))
		p := a.CPU
		fmt.Fprintf(w, "CPU (cores):\tmin %.2f\tmedian %.2f\tp90 %.2f\tmax %.2f\n", p.Min, p.Median, p.P90, p.Max)
	}
	if a.Requests == (api.Resources{}) {
		fmt.Fprintf(w, "Advice:\tnone yet: %s\n", esc(a.Reason))
		return
	}
	fmt.Fprintf(w, "Advice:\trequests cpu=%s memory=%s\n", esc(a.Requests.CPU), esc(a.Requests.Memory))
	fmt.Fprintf(w, "Why:\t%s\n", esc(a.Reason))
	if a.Step != "" {
		fmt.Fprintf(w, "Apply:\tin the step's deployment file: requests: {cpu: %s, memory: %s}; or submit --cpu %s --memory %s (capped by scriptPods.resources.maxRequests)\n",
			esc(a.Requests.CPU), esc(a.Requests.Memory), esc(a.Requests.CPU), esc(a.Requests.Memory))
		return
	}
	fmt.Fprintf(w, "Apply:\t%s\n", adviceHelm(a, release, namespace, chart))
	if above := aboveDefaultMax(a.Requests); len(above) > 0 {
		fmt.Fprintf(w, "Note:\tthe advice is above the chart's default scriptPods.resources.maxRequests (%s), which the chart refuses: unless your release raised it, add --set scriptPods.resources.maxRequests.<name>=<value> to the command\n",
			strings.Join(above, ", "))
	}
}

// aboveDefaultMax names the advised requests above the chart's default maxRequests.
func aboveDefaultMax(r api.Resources) []string { return chartgen.AboveDefaultMax(r.CPU, r.Memory) }

// adviceHelm is the helm command that sets the advised requests on the workers' release, shell-quoted.
func adviceHelm(a api.RequestsAdvice, release, namespace, chart string) string {
	return chartgen.RequestsUpgrade(release, namespace, chart, a.Requests.CPU, a.Requests.Memory)
}

// bytesText prints a byte count in Mi (Gi from 10Gi), rounded.
func bytesText(b float64) string {
	if b >= 10<<30 {
		return fmt.Sprintf("%.1fGi", b/(1<<30))
	}
	return fmt.Sprintf("%.0fMi", b/(1<<20))
}
