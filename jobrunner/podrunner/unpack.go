package podrunner

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Bounds on what unpacking one package may write (a small archive can expand to fill the node's disk).
const (
	MaxUnpackedBytes = 16 << 30
	MaxUnpackedFiles = 100000
)

// Unpack places the package file src (its content, named fileName) into dir: a .tar.gz, .tgz, .tar or .zip
// is unpacked, anything else is moved there under fileName. Nothing is written outside dir: entries that
// are absolute or climb out with "..", symbolic links that point out of dir (or are absolute), hard links and
// special files are refused, and writes go through an os.Root, which follows no link out of it either.
func Unpack(dir, src, fileName string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	u := &unpacker{root: root}
	switch api.Archive(fileName) {
	case "":
		return os.Rename(src, filepath.Join(dir, fileName))
	case "zip":
		return u.zip(src)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if api.Archive(fileName) == "tar.gz" {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s is not gzip-compressed: %w", fileName, err)
		}
		defer gz.Close()
		r = gz
	}
	return u.tar(r)
}

type unpacker struct {
	root  *os.Root
	bytes int64
	files int
}

func (u *unpacker) tar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the tar archive: %w", err)
		}
		var kind fs.FileMode
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
		case tar.TypeDir:
			kind = fs.ModeDir
		case tar.TypeSymlink:
			kind = fs.ModeSymlink
		default:
			return fmt.Errorf("%s: entry type %q is not unpacked (only files, directories and symbolic links)", h.Name, h.Typeflag)
		}
		if err := u.entry(h.Name, kind, fs.FileMode(h.Mode).Perm(), h.Linkname, tr); err != nil {
			return err
		}
	}
}

func (u *unpacker) zip(src string) error {
	zr, err := zip.OpenReader(src)
	if err != nil {
		return fmt.Errorf("reading the zip archive: %w", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		mode := f.Mode()
		kind := mode.Type()
		if kind&^(fs.ModeDir|fs.ModeSymlink) != 0 {
			return fmt.Errorf("%s: a special file is not unpacked (only files, directories and symbolic links)", f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		target := ""
		if kind == fs.ModeSymlink {
			b, err := io.ReadAll(io.LimitReader(rc, 4096))
			if err != nil {
				rc.Close()
				return fmt.Errorf("%s: %w", f.Name, err)
			}
			target = string(b)
		}
		err = u.entry(f.Name, kind, mode.Perm(), target, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// entry writes one archive entry under the root.
func (u *unpacker) entry(name string, kind, perm fs.FileMode, target string, r io.Reader) error {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if name == "" || name == "." {
		return nil
	}
	if !filepath.IsLocal(name) {
		return fmt.Errorf("%s: the entry's path leaves the work directory (absolute, or climbing out with ..): the archive is refused", name)
	}
	if u.files++; u.files > MaxUnpackedFiles {
		return fmt.Errorf("the archive holds more than %d entries: split it", MaxUnpackedFiles)
	}
	if dir := path.Dir(name); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	switch kind {
	case fs.ModeDir:
		return u.root.MkdirAll(name, 0o755)
	case fs.ModeSymlink:
		if path.IsAbs(target) || !filepath.IsLocal(path.Join(path.Dir(name), target)) {
			return fmt.Errorf("%s: a symbolic link to %q points out of the work directory: the archive is refused", name, target)
		}
		return u.root.Symlink(target, name)
	}
	if perm == 0 {
		perm = 0o644
	}
	f, err := u.root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, MaxUnpackedBytes-u.bytes+1))
	u.bytes += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if u.bytes > MaxUnpackedBytes {
		return fmt.Errorf("the archive unpacks to more than %d GiB: refused", MaxUnpackedBytes>>30)
	}
	return nil
}
