package api

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Packages: files larger than an operation may carry (a chart with its dependencies, a zip of manifests, a
// binary), uploaded once to the dispatch server, content-addressed by SHA-256, and referenced by steps. The
// script pod downloads each one itself with its operation's pod token and unpacks it into the work directory
// before the script runs (PROTOCOL.md, Packages).

// DefaultMaxPackageSize is the server's default limit on one package's size (its --max-package-size).
const DefaultMaxPackageSize int64 = 2 << 30

// MaxPackagesPerOperation bounds the packages one step references.
const MaxPackagesPerOperation = 20

// HeaderUploadOffset carries an upload's offset: in a PATCH, where the body's first byte goes (it must be the
// server's offset); in replies, the server's offset after the request.
const HeaderUploadOffset = "Upload-Offset"

// CodeOffsetMismatch (409): a package upload's PATCH starts at another offset than the server holds; the
// reply's Upload-Offset header and body say where to continue. CodeUploadBusy (409): another request is
// writing to the same upload right now; retry in a moment. CodeChecksumMismatch (422): the uploaded bytes do
// not hash to the declared sha256; the upload was discarded.
const (
	CodeOffsetMismatch   = "offset_mismatch"
	CodeUploadBusy       = "upload_busy"
	CodeChecksumMismatch = "checksum_mismatch"
)

// Package is a package as the server holds it. Version defaults to the first 12 hex digits of SHA256, so
// every package has one and NAME@VERSION always names one content. FileName, the base name of the file that
// was pushed, says how the script pod places it: a .tar.gz, .tgz, .tar or .zip is unpacked into the work
// directory, anything else is placed there under this name.
type Package struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	SHA256    string    `json:"sha256"` // hex
	Size      int64     `json:"size"`
	FileName  string    `json:"file_name"`
	CreatedAt time.Time `json:"created_at"`
}

// Ref is the package's exact reference, NAME@sha256:HEX.
func (p Package) Ref() string { return p.Name + "@sha256:" + p.SHA256 }

// PackageList is the reply to GET /api/v1/packages, ordered by name, then newest first.
type PackageList struct {
	Packages []Package `json:"packages"`
}

// CreatePackageRequest names uploaded content (POST /api/v1/packages): the upload of SHA256 must be
// complete. Version is optional (see Package).
type CreatePackageRequest struct {
	Name     string `json:"name"`
	Version  string `json:"version,omitempty"`
	SHA256   string `json:"sha256"`
	FileName string `json:"file_name"`
}

// UploadRequest starts (or finds) the upload of content with this SHA-256 and size (POST
// /api/v1/packages/uploads).
type UploadRequest struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Upload is the state of an upload: how many bytes the server holds (Offset) of Size. Complete is true once
// the content is stored and verified (Offset == Size); the content is then named with POST /api/v1/packages.
type Upload struct {
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Offset   int64  `json:"offset"`
	Complete bool   `json:"complete"`
}

// PackageRef is a parsed package reference: NAME@sha256:HEX (SHA256 set) or NAME@VERSION (Version set).
type PackageRef struct {
	Name, Version, SHA256 string
}

func (r PackageRef) String() string {
	if r.SHA256 != "" {
		return r.Name + "@sha256:" + r.SHA256
	}
	return r.Name + "@" + r.Version
}

var (
	packageName    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	packageVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	sha256Hex      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// CheckPackageName, CheckPackageVersion and CheckSHA256 say what is wrong with a name, a version or a hex
// digest, or return nil.
func CheckPackageName(s string) error {
	if !packageName.MatchString(s) {
		return fmt.Errorf("%q is not a package name: 1..128 letters, digits, '.', '_' and '-', starting with a letter or digit", s)
	}
	return nil
}

func CheckPackageVersion(s string) error {
	if !packageVersion.MatchString(s) {
		return fmt.Errorf("%q is not a package version: 1..64 letters, digits, '.', '_', '+' and '-', starting with a letter or digit", s)
	}
	return nil
}

func CheckSHA256(s string) error {
	if !sha256Hex.MatchString(s) {
		return fmt.Errorf("%q is not a SHA-256: give 64 lower-case hex digits", s)
	}
	return nil
}

// ParsePackageRef parses NAME@sha256:HEX or NAME@VERSION.
func ParsePackageRef(s string) (PackageRef, error) {
	name, rest, ok := strings.Cut(s, "@")
	if !ok {
		return PackageRef{}, fmt.Errorf("%q is not a package reference: use NAME@sha256:HEX or NAME@VERSION (`octo-worker package list` shows them)", s)
	}
	if err := CheckPackageName(name); err != nil {
		return PackageRef{}, err
	}
	if hex, ok := strings.CutPrefix(rest, "sha256:"); ok {
		if err := CheckSHA256(hex); err != nil {
			return PackageRef{}, err
		}
		return PackageRef{Name: name, SHA256: hex}, nil
	}
	if err := CheckPackageVersion(rest); err != nil {
		return PackageRef{}, err
	}
	return PackageRef{Name: name, Version: rest}, nil
}

// Archive reports how the script pod unpacks a package file: "tar.gz", "tar" or "zip" by its name's
// extension, or "" for a file placed as it is.
func Archive(fileName string) string {
	n := strings.ToLower(fileName)
	switch {
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return "tar.gz"
	case strings.HasSuffix(n, ".tar"):
		return "tar"
	case strings.HasSuffix(n, ".zip"):
		return "zip"
	}
	return ""
}
