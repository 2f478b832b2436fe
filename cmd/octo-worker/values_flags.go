package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/chartgen"
)

// valueFlags are helm's value flags, with helm's names and meaning: chartgen validate and render, install and
// the agent take values exactly as `helm upgrade` does.
func valueFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "values file (repeatable; later files win)"},
		&cli.StringSliceFlag{Name: "set", Usage: "set a value, helm's key=value syntax (repeatable): numbers and booleans stay numbers and booleans"},
		&cli.StringSliceFlag{Name: "set-string", Usage: "set a value that is always a string, key=value (repeatable)"},
		&cli.StringSliceFlag{Name: "set-file", Usage: "set a value to a file's content, key=path (repeatable)"},
		&cli.StringSliceFlag{Name: "set-json", Usage: "set a value to JSON, key=<json> (repeatable)"},
		&cli.StringSliceFlag{Name: "set-literal", Usage: "set a value literally, key=value (repeatable)"},
	}
}

// valueInput reads the value flags of c (files are read here, so a missing file fails before anything else).
func valueInput(c *cli.Context) (chartgen.Input, error) {
	in, err := chartgen.ReadFiles(c.StringSlice("values"))
	if err != nil {
		return in, cli.Exit(err.Error(), 1)
	}
	in.Set = c.StringSlice("set")
	in.SetString = c.StringSlice("set-string")
	in.SetFile = c.StringSlice("set-file")
	in.SetJSON = c.StringSlice("set-json")
	in.SetLiteral = c.StringSlice("set-literal")
	return in, nil
}

// printProblems writes one line per problem ("(defaults)" for values nobody set) and returns an exit error
// that says what was not done.
func printProblems(c *cli.Context, err error, what string) error {
	var pe *chartgen.ProblemsError
	if !errors.As(err, &pe) {
		return err
	}
	for _, p := range pe.Problems {
		if p.File == "" {
			p.File = "(defaults)"
		}
		fmt.Fprintln(c.App.ErrWriter, p.String())
	}
	return cli.Exit(fmt.Sprintf("%d problem(s) in the values%s", len(pe.Problems), what), 1)
}
