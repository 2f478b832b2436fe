package main

import (
	"errors"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// newApp builds the command tree. Each subcommand lives in its own file (cmd_*.go) and wires the packages it
// needs; nothing here holds state.
func newApp(version string) *cli.App {
	return &cli.App{
		Name:                 "octo-worker",
		Usage:                "a Kubernetes worker that runs each deployment step as its own batch/v1 Job",
		Version:              version,
		EnableBashCompletion: true,
		// A flag given twice is two values; a comma inside a value (--set 'worker.pools={a,b}', --var X=a,b)
		// is part of it.
		DisableSliceFlagSeparator: true,
		// main prints errors and picks the exit code; commands never call os.Exit themselves.
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"OCTO_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"OCTO_LOG_FORMAT"}, Usage: "text, json, or auto (json when stderr is not a terminal)"},
		},
		Commands: []*cli.Command{
			// Each area appends its commands here.
			runnerCommand(),
			pauseCommand(),
			agentCommand(),
			chartgenCommand(),
			installCommand(),
			serverCommand(), poolCommand(), tokenCommand(), submitCommand(), deployCommand(), opsCommand(),
			deploymentsCommand(), workersCommand(), requestsCommand(), packageCommand(),
		},
	}
}

// newLogger returns the program's logger: JSON when stderr is not a terminal (in the cluster), readable text
// on a terminal. Components derive their own entries with a "component" field.
func newLogger(c *cli.Context) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	level, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return nil, cli.Exit("--log-level: "+err.Error()+" (use debug, info, warn or error)", 2)
	}
	log.SetLevel(level)
	switch f := c.String("log-format"); f {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "auto":
		if term.IsTerminal(int(os.Stderr.Fd())) {
			log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
		} else {
			log.SetFormatter(&logrus.JSONFormatter{})
		}
	default:
		return nil, cli.Exit("--log-format: unknown format "+f+" (use text, json or auto)", 2)
	}
	return log, nil
}

// exitCode maps an error returned by a command to the process exit code: a cli.ExitCoder keeps its own code
// (submit --follow exits with the operation's exit code), anything else is 1.
func exitCode(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}
