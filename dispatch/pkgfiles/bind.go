package pkgfiles

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// A package's content lives in a directory, its name and version in the database, so every server of one
// database must use the same directory (a shared volume). A server given another one would answer 404 for
// content uploaded through the others, and pods it serves would fail to download their packages. Bind makes
// that mistake a refusal at start: the first server to start writes a random id into the directory (IDFile)
// and the same into the database (setting IDSetting); every later start compares them.

// IDFile is the file, in the directory, that names the database it belongs to; IDSetting is the database
// setting that names its directory.
const (
	IDFile    = "octo-worker-packages-id"
	IDSetting = "packages_dir_id"
)

// Settings is what Bind needs of the store.
type Settings interface {
	Setting(ctx context.Context, key string) (string, error) // store.ErrNotFound when unset
	SetSetting(ctx context.Context, key, value string) error
}

// Bind checks that d is the directory of the database behind st, and ties them together when neither names
// the other yet (the first start, or the first since an upgrade). A directory that names a database which
// names no directory (a database created anew beside an old directory) is adopted. The error says what to
// do: it is one of a misconfigured flag.
func (d *Dir) Bind(ctx context.Context, st Settings) error {
	want, err := st.Setting(ctx, IDSetting)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("reading which packages directory the database uses: %w", err)
	}
	path := filepath.Join(d.root, IDFile)
	have, err := readID(path)
	if err != nil {
		return err
	}
	switch {
	case want != "" && have == want:
		return nil
	case want != "" && have == "":
		return fmt.Errorf("%s is not this database's packages directory (it has no %s; the database's directory holds "+
			"one that reads %s): servers sharing a database must share one packages directory, so give this server "+
			"the same one as the others (a shared volume); if this is that directory, restored without the file, "+
			"write %s into %s and start again", d.root, IDFile, want, want, path)
	case want != "":
		return fmt.Errorf("%s holds another database's packages (its %s reads %s; this database's directory holds %s): "+
			"give each database its own packages directory, and every server of one database the same one", d.root,
			IDFile, have, want)
	}
	if have == "" {
		if have, err = writeID(path); err != nil {
			return err
		}
	}
	if err := st.SetSetting(ctx, IDSetting, have); err != nil {
		return fmt.Errorf("recording the packages directory in the database: %w", err)
	}
	// Two first starts at once, each with a directory of its own: the one whose id the database kept goes on.
	if got, err := st.Setting(ctx, IDSetting); err != nil || got != have {
		return errors.Join(fmt.Errorf("another server tied this database to another packages directory while this one "+
			"started: give every server of one database the same --packages-dir"), err)
	}
	return nil
}

// readID returns the id in the file at path, "" when there is none.
func readID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the packages directory's id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("%s is empty: write into it the id the database names (setting %s), or delete it if "+
			"this directory belongs to no database yet", path, IDSetting)
	}
	return id, nil
}

// writeID writes a new random id to the file at path, whole or not at all, and returns it.
func writeID(path string) (string, error) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the packages directory's id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("writing the packages directory's id: %w", err)
	}
	return id, nil
}
