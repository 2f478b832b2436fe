package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"

	"github.com/urfave/cli/v2"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// serverBackupCommand is `octo-worker server backup`: a consistent copy of a SQLite database, taken while a
// server uses it.
func serverBackupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "copy the SQLite database into a new file, while the server runs",
		Description: "Writes a consistent snapshot of --db (SQLite's VACUUM INTO) to the new file --to, while servers keep\n" +
			"serving from --db. The copy holds the sensitive values of queued operations in clear (opened with the\n" +
			"keys of DB-keys, so the copy needs no key file): it is created 0600; keep it as private as the\n" +
			"database. It never overwrites a file. Package content is not in the database:\n" +
			"copy the packages directory (DB.packages, or the server's --packages-dir) after the backup.\n\n" +
			"To restore: stop the server, delete DB-wal and DB-shm if they exist, copy the backup to DB, start the\n" +
			"server. A PostgreSQL database is backed up with pg_dump instead.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "db", Value: "octo-worker.db", EnvVars: []string{"OCTO_DB"}, Usage: "SQLite database file the server uses"},
			&cli.StringFlag{Name: "to", Usage: "the backup file to create (required; must not exist)"},
		},
		Action: runServerBackup,
	}
}

func runServerBackup(c *cli.Context) error {
	db, to := c.String("db"), c.String("to")
	if isDatabaseURL(db) {
		return cli.Exit("--db: this command copies a SQLite file; "+pgDumpAdvice(db, to), 2)
	}
	if to == "" {
		return cli.Exit("--to: give the name of the backup file to create", 2)
	}
	err := sqlite.Backup(c.Context, db, to)
	switch {
	case errors.Is(err, fs.ErrExist):
		return cli.Exit(fmt.Sprintf("--to: %v: choose a new file name, or remove the old backup first", err), 1)
	case errors.Is(err, fs.ErrNotExist):
		return cli.Exit(fmt.Sprintf("--db: %v: give the database file the server runs with (its --db)", err), 1)
	case err != nil:
		return fmt.Errorf("backing up %s: %w", db, err)
	}
	fmt.Fprintf(c.App.Writer, "Backed up %s to %s (mode 0600: it holds sensitive values).\n", db, to)
	return nil
}

// pgDumpAdvice says how to back up and restore the PostgreSQL database at dbURL with pg_dump and pg_restore,
// with the file to (or a default name). A password in the URL is left out of the commands, so that it is not
// echoed: both programs read it from PGPASSWORD or ~/.pgpass.
func pgDumpAdvice(dbURL, to string) string {
	note := ""
	if u, err := url.Parse(dbURL); err == nil && u.User != nil {
		if _, set := u.User.Password(); set {
			u.User = url.User(u.User.Username())
			dbURL = u.String()
			note = "\n(the password is left out: set PGPASSWORD or use ~/.pgpass)"
		}
	}
	if to == "" {
		to = "octo-worker.dump"
	}
	file, db := chartgen.ShellQuote(to), chartgen.ShellQuote(dbURL)
	return "back up a PostgreSQL database with pg_dump, while the servers run:\n  pg_dump --format=custom --file=" + file + " " + db +
		"\nand restore it, with the servers stopped, with:\n  pg_restore --clean --if-exists --dbname=" + db + " " + file + note
}
