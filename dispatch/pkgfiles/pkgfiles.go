// Package pkgfiles keeps the content of packages on the dispatch server's disk, content-addressed: a
// directory (beside the database by default) with one file per SHA-256 under sha256/, and the uploads in
// progress under uploads/, each named by the SHA-256 and size its client declared. An upload is appended to
// from the offset it holds (its file's length), so a client whose connection broke continues where the server
// stopped; once it holds the declared size, its content is hashed and, when it matches, moved under sha256/.
// Content being deleted is moved under deleting/ first (RemoveUnused). Nothing is held in memory but a copy
// buffer. The metadata (names, versions) is the store's; a file of the directory names the database it belongs
// to (Bind).
package pkgfiles

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Append returns beside *OffsetError and *ChecksumError.
var (
	// ErrBusy: another request is writing to this upload now.
	ErrBusy = errors.New("another request is writing to this upload now: retry in a moment")
	// ErrTooLarge: the request carried more bytes than the upload's declared size leaves; none was kept.
	ErrTooLarge = errors.New("the body holds more bytes than the upload's declared size leaves")
	// ErrNoUpload: no upload of this content is in progress (start one), and the content is not stored.
	ErrNoUpload = errors.New("no upload of this content is in progress: start one (POST /api/v1/packages/uploads)")
)

// OffsetError refuses an append that does not start where the upload ends.
type OffsetError struct{ Have, Want int64 }

func (e *OffsetError) Error() string {
	return fmt.Sprintf("the upload holds %d bytes, the request starts at byte %d: continue from %d", e.Have, e.Want, e.Have)
}

// ChecksumError says that a complete upload does not hash to its declared SHA-256; it was discarded.
type ChecksumError struct{ Declared, Got string }

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("the uploaded bytes hash to sha256:%s, not the declared sha256:%s: the upload was discarded; "+
		"check that the file did not change while it was pushed, then push it again", e.Got, e.Declared)
}

// Upload is an upload's state.
type Upload struct {
	SHA256   string
	Size     int64
	Offset   int64
	Complete bool // the content is stored and verified
}

// Dir is a package directory.
type Dir struct {
	root string

	mu     sync.Mutex
	busy   map[string]bool // uploads being appended to
	asides atomic.Int64    // names content being deleted apart (RemoveUnused)
}

// Open opens (creating it, private to its owner) the package directory root.
func Open(root string) (*Dir, error) {
	for _, sub := range []string{"sha256", "uploads", "deleting"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return nil, fmt.Errorf("creating the package directory %s: %w", root, err)
		}
	}
	d := &Dir{root: root, busy: map[string]bool{}}
	d.restoreAsides()
	return d, nil
}

// restoreAsides puts back content a deletion moved aside and did not finish (the process stopped in
// between): the next retention run decides again.
func (d *Dir) restoreAsides() {
	entries, _ := os.ReadDir(filepath.Join(d.root, "deleting"))
	for _, e := range entries {
		sha, _, _ := strings.Cut(e.Name(), ".")
		aside := filepath.Join(d.root, "deleting", e.Name())
		_ = os.Link(aside, d.Path(sha)) // fails when the content is back already
		_ = os.Remove(aside)
	}
}

// Root is the directory.
func (d *Dir) Root() string { return d.root }

// Path is where the content with this SHA-256 is stored (it may not exist).
func (d *Dir) Path(sha string) string { return filepath.Join(d.root, "sha256", sha) }

func (d *Dir) partial(sha string, size int64) string {
	return filepath.Join(d.root, "uploads", sha+"."+strconv.FormatInt(size, 10))
}

// Size returns the size of stored content, or an error wrapping os.ErrNotExist.
func (d *Dir) Size(sha string) (int64, error) {
	fi, err := os.Stat(d.Path(sha))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Start starts the upload of content with this SHA-256 and size, or returns the one in progress. An upload in
// progress with another declared size is discarded (the content, and so its size, is the SHA-256's). Content
// already stored is complete at once (and counts as recent for Sweep).
func (d *Dir) Start(sha string, size int64) (Upload, error) {
	if n, err := d.Size(sha); err == nil {
		now := time.Now()
		_ = os.Chtimes(d.Path(sha), now, now)
		return Upload{SHA256: sha, Size: n, Offset: n, Complete: true}, nil
	}
	if !d.lock(sha) {
		return Upload{}, ErrBusy
	}
	defer d.unlock(sha)
	if u, err := d.status(sha); err == nil && u.Size == size {
		return u, nil
	}
	d.removePartials(sha)
	f, err := os.OpenFile(d.partial(sha, size), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return Upload{}, fmt.Errorf("starting the upload of %s: %w", sha, err)
	}
	if err := f.Close(); err != nil {
		return Upload{}, err
	}
	if size == 0 {
		return d.finish(sha, size)
	}
	return Upload{SHA256: sha, Size: size}, nil
}

// Status returns an upload's state, or ErrNoUpload; ErrBusy while a request appends to it (a request whose
// connection broke may still be writing what it received).
func (d *Dir) Status(sha string) (Upload, error) {
	if n, err := d.Size(sha); err == nil {
		return Upload{SHA256: sha, Size: n, Offset: n, Complete: true}, nil
	}
	if d.isBusy(sha) {
		return Upload{}, ErrBusy
	}
	return d.state(sha)
}

// state is Status for the holder of the upload's lock.
func (d *Dir) state(sha string) (Upload, error) {
	if n, err := d.Size(sha); err == nil {
		return Upload{SHA256: sha, Size: n, Offset: n, Complete: true}, nil
	}
	return d.status(sha)
}

func (d *Dir) status(sha string) (Upload, error) {
	matches, _ := filepath.Glob(filepath.Join(d.root, "uploads", sha+".*"))
	for _, m := range matches {
		size, err := strconv.ParseInt(strings.TrimPrefix(filepath.Ext(m), "."), 10, 64)
		if err != nil {
			continue
		}
		fi, err := os.Stat(m)
		if err != nil {
			continue
		}
		return Upload{SHA256: sha, Size: size, Offset: fi.Size()}, nil
	}
	return Upload{}, ErrNoUpload
}

// Append writes r to the upload from offset, which must be the upload's offset, and returns the new state.
// Whatever arrived before r failed is kept, so the client continues from the returned offset. An upload that
// reaches its size is verified: stored when its content hashes to its SHA-256, else discarded (*ChecksumError).
func (d *Dir) Append(sha string, offset int64, r io.Reader) (Upload, error) {
	if !d.lock(sha) {
		return Upload{}, ErrBusy
	}
	defer d.unlock(sha)
	u, err := d.state(sha)
	if err != nil {
		return u, err
	}
	if u.Offset != offset {
		return u, &OffsetError{Have: u.Offset, Want: offset}
	}
	if u.Complete {
		return u, nil
	}
	f, err := os.OpenFile(d.partial(sha, u.Size), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return u, fmt.Errorf("opening the upload of %s: %w", sha, err)
	}
	rest := u.Size - u.Offset
	n, copyErr := io.Copy(f, io.LimitReader(r, rest))
	if copyErr == nil && n == rest {
		var one [1]byte
		if m, _ := io.ReadFull(r, one[:]); m > 0 {
			// More than the declared size: keep nothing of this request.
			copyErr, n = ErrTooLarge, 0
			_ = f.Truncate(u.Offset)
		}
	}
	if err := f.Close(); err != nil && copyErr == nil {
		copyErr = err
	}
	u.Offset += n
	if copyErr != nil {
		if st, err := d.status(sha); err == nil {
			u = st // what the file holds, whatever the copy counted
		}
		return u, copyErr
	}
	if u.Offset < u.Size {
		return u, nil
	}
	return d.finish(sha, u.Size)
}

// finish verifies a complete upload and stores its content.
func (d *Dir) finish(sha string, size int64) (Upload, error) {
	p := d.partial(sha, size)
	f, err := os.Open(p)
	if err != nil {
		return Upload{}, fmt.Errorf("verifying the upload of %s: %w", sha, err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	if err == nil {
		err = f.Sync() // what was appended reaches the disk before the rename makes it content
	}
	f.Close()
	if err != nil {
		return Upload{}, fmt.Errorf("verifying the upload of %s: %w", sha, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		_ = os.Remove(p)
		return Upload{SHA256: sha, Size: size}, &ChecksumError{Declared: sha, Got: got}
	}
	if err := os.Rename(p, d.Path(sha)); err != nil {
		return Upload{}, fmt.Errorf("storing the content of %s: %w", sha, err)
	}
	return Upload{SHA256: sha, Size: size, Offset: size, Complete: true}, nil
}

// Claim marks stored content as in use now, for a package about to name it, and returns its size; an error
// wrapping os.ErrNotExist when it is not stored (any more). Content claimed after a removal's cutoff survives
// that removal (RemoveUnused), so the caller names it in the store after Claim returns.
func (d *Dir) Claim(sha string) (int64, error) {
	now := time.Now()
	if err := os.Chtimes(d.Path(sha), now, now); err != nil {
		return 0, err
	}
	return d.Size(sha)
}

// RemoveUnused deletes stored content that was not modified or claimed since before and reports whether it
// did (a missing file is not an error). It is safe against a Claim or Start of the same content at the same
// moment, in this process or another sharing the directory: the file is first moved aside (atomically), and
// moved back when it turns out to be claimed since before; a Claim that finds it moved aside fails, so its
// package is refused (the client pushes again) rather than named with no content.
func (d *Dir) RemoveUnused(sha string, before time.Time) (bool, error) {
	aside := filepath.Join(d.root, "deleting", fmt.Sprintf("%s.%d.%d", sha, os.Getpid(), d.asides.Add(1)))
	if err := os.Rename(d.Path(sha), aside); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("deleting package content %s: %w", sha, err)
	}
	fi, err := os.Stat(aside)
	if err == nil && !fi.ModTime().Before(before) {
		// Claimed meanwhile: put it back, unless new content of the same SHA-256 took its place.
		err = os.Link(aside, d.Path(sha))
		if errors.Is(err, os.ErrExist) {
			err = nil
		}
		if err != nil {
			return false, fmt.Errorf("keeping package content %s claimed during its deletion: %w", sha, err)
		}
		return false, os.Remove(aside)
	}
	if err := os.Remove(aside); err != nil {
		return false, fmt.Errorf("deleting package content %s: %w", sha, err)
	}
	return true, nil
}

// Sweep deletes the stored content not modified since before that keep does not claim, and the uploads not
// appended to since uploadsBefore. It returns how many files it deleted.
func (d *Dir) Sweep(before, uploadsBefore time.Time, keep func(sha string) bool) (int, error) {
	n := 0
	var errs []error
	for _, c := range []struct {
		sub    string
		before time.Time
		keep   func(name string) bool
	}{
		{"sha256", before, keep},
		{"uploads", uploadsBefore, func(name string) bool {
			sha, _, _ := strings.Cut(name, ".")
			return d.isBusy(sha)
		}},
	} {
		entries, err := os.ReadDir(filepath.Join(d.root, c.sub))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(c.before) || c.keep(e.Name()) {
				continue
			}
			if c.sub == "sha256" {
				removed, err := d.RemoveUnused(e.Name(), c.before)
				if err != nil {
					errs = append(errs, err)
				} else if removed {
					n++
				}
				continue
			}
			if err := os.Remove(filepath.Join(d.root, c.sub, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (d *Dir) removePartials(sha string) {
	matches, _ := filepath.Glob(filepath.Join(d.root, "uploads", sha+".*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

func (d *Dir) lock(sha string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[sha] {
		return false
	}
	d.busy[sha] = true
	return true
}

func (d *Dir) unlock(sha string) {
	d.mu.Lock()
	delete(d.busy, sha)
	d.mu.Unlock()
}

func (d *Dir) isBusy(sha string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.busy[sha]
}
