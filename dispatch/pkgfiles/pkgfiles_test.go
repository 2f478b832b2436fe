package pkgfiles

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// stored puts content in d through an upload and dates its file age ago; it returns its SHA-256.
func stored(t *testing.T, d *Dir, content []byte, age time.Duration) string {
	t.Helper()
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	if _, err := d.Start(sha, int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if u, err := d.Append(sha, 0, bytes.NewReader(content)); err != nil || !u.Complete {
		t.Fatalf("append: %+v, %v", u, err)
	}
	old := time.Now().Add(-age)
	if err := os.Chtimes(d.Path(sha), old, old); err != nil {
		t.Fatal(err)
	}
	return sha
}

func open(t *testing.T) *Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRemoveUnusedKeepsClaimedContent: retention deletes a package's row, then a package naming the same
// content is created (Claim) before the content is deleted: the content stays. Content not claimed since the
// cutoff goes, and a Claim after that fails rather than naming nothing.
func TestRemoveUnusedKeepsClaimedContent(t *testing.T) {
	d := open(t)
	before := time.Now().Add(-time.Hour)
	kept := stored(t, d, []byte("claimed again"), 2*time.Hour)
	if n, err := d.Claim(kept); err != nil || n != int64(len("claimed again")) {
		t.Fatalf("Claim = %d, %v", n, err)
	}
	if removed, err := d.RemoveUnused(kept, before); err != nil || removed {
		t.Fatalf("RemoveUnused of content claimed after the cutoff = %v, %v; want kept", removed, err)
	}
	if _, err := d.Size(kept); err != nil {
		t.Fatalf("claimed content is gone: %v", err)
	}

	gone := stored(t, d, []byte("unused"), 2*time.Hour)
	if removed, err := d.RemoveUnused(gone, before); err != nil || !removed {
		t.Fatalf("RemoveUnused of unused content = %v, %v; want removed", removed, err)
	}
	if _, err := d.Claim(gone); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Claim of removed content: %v, want os.ErrNotExist", err)
	}
	if removed, err := d.RemoveUnused(gone, before); err != nil || removed {
		t.Fatalf("RemoveUnused of missing content = %v, %v; want nothing, no error", removed, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(d.Root(), "deleting")); len(entries) != 0 {
		t.Fatalf("left aside: %v", entries)
	}
}

// TestClaimRacesRemoveUnused: a Claim and a RemoveUnused of the same old content at the same moment, many
// times (two Dirs on one directory, as two servers sharing it): whenever the Claim succeeds, the content is
// still stored afterwards.
func TestClaimRacesRemoveUnused(t *testing.T) {
	d := open(t)
	other, err := Open(d.Root())
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Hour)
	kept, removed := 0, 0
	for i := range 300 {
		sha := stored(t, d, []byte(fmt.Sprint("content ", i)), 2*time.Hour)
		var wg sync.WaitGroup
		var claimErr, removeErr error
		var gone bool
		wg.Add(2)
		go func() { defer wg.Done(); _, claimErr = d.Claim(sha) }()
		go func() { defer wg.Done(); gone, removeErr = other.RemoveUnused(sha, before) }()
		wg.Wait()
		if removeErr != nil {
			t.Fatal(removeErr)
		}
		_, sizeErr := d.Size(sha)
		switch {
		case claimErr == nil && sizeErr != nil:
			t.Fatalf("round %d: the claim succeeded but the content is gone (removed=%v)", i, gone)
		case claimErr == nil:
			kept++
		case errors.Is(claimErr, os.ErrNotExist):
			removed++
		default:
			t.Fatal(claimErr)
		}
	}
	t.Logf("claimed and kept %d, removed first %d", kept, removed)
}

// TestOpenRestoresContentLeftAside: content a deletion moved aside when the process stopped is back after
// Open, for the next retention run to decide again.
func TestOpenRestoresContentLeftAside(t *testing.T) {
	d := open(t)
	sha := stored(t, d, []byte("left aside"), 0)
	if err := os.Rename(d.Path(sha), filepath.Join(d.Root(), "deleting", sha+".1.1")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(d.Root()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Size(sha); err != nil {
		t.Fatalf("content left aside was not restored: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(d.Root(), "deleting")); len(entries) != 0 {
		t.Fatalf("still aside: %v", entries)
	}
}

// TestSweepKeepsClaimedContent: the sweep of files no package names (listed before) keeps content claimed
// since its cutoff.
func TestSweepKeepsClaimedContent(t *testing.T) {
	d := open(t)
	before := time.Now().Add(-time.Hour)
	claimed := stored(t, d, []byte("named just now"), 2*time.Hour)
	unused := stored(t, d, []byte("named by nothing"), 2*time.Hour)
	if _, err := d.Claim(claimed); err != nil {
		t.Fatal(err)
	}
	n, err := d.Sweep(before, before, func(string) bool { return false })
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 file deleted", n, err)
	}
	if _, err := d.Size(claimed); err != nil {
		t.Fatalf("claimed content swept: %v", err)
	}
	if _, err := d.Size(unused); err == nil {
		t.Fatal("unused content kept")
	}
}
