package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/dispatch/client"
)

// packageCommand is `octo-worker package`: push packages to the server and list them.
func packageCommand() *cli.Command {
	return withClientFlags(&cli.Command{
		Name:  "package",
		Usage: "push packages (files a step unpacks into its work directory) and list them",
		Subcommands: []*cli.Command{
			{Name: "push", Usage: "upload a file as a package and print its reference NAME@sha256:...", ArgsUsage: "FILE",
				Description: "Streams the file to the server (content the server holds already is not sent again) and resumes\n" +
					"after a broken connection. A .tar.gz, .tgz, .tar or .zip is unpacked into the step's work directory;\n" +
					"any other file is placed there under its name. Reference it with --package NAME@sha256:... or\n" +
					"NAME@VERSION on submit, or packages: in a deployment file.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "package name (default: the file's name without .tar.gz, .tgz, .tar or .zip)"},
					&cli.StringFlag{Name: "version", Usage: "package version (default: the first 12 digits of its sha256)"},
				},
				Action: idAction("file", func(c *cli.Context, cl *client.Client, file string) error {
					p, err := cl.PushPackage(c.Context, file, c.String("name"), c.String("version"))
					if err != nil {
						return err
					}
					return output(c, p, func(w io.Writer) {
						fmt.Fprintln(w, esc(p.Ref()))
						fmt.Fprint(c.App.ErrWriter, escText(fmt.Sprintf("pushed %s as %s@%s (%s)\n", file, p.Name, p.Version, size(p.Size))))
					})
				})},
			{Name: "list", Usage: "list packages: name, version, size, sha256", Action: clientAction(func(c *cli.Context, cl *client.Client) error {
				pkgs, err := cl.Packages(c.Context)
				if err != nil {
					return err
				}
				return output(c, pkgs, func(w io.Writer) {
					fmt.Fprintln(w, "NAME\tVERSION\tSIZE\tSHA256\tFILE\tCREATED")
					for _, p := range pkgs {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", esc(p.Name), esc(p.Version), size(p.Size), esc(p.SHA256), esc(p.FileName), when(p.CreatedAt))
					}
				})
			})},
		},
	})
}

// size prints a byte count as a person reads it.
func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
