package validate

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// packageRefs checks a step's package references (their syntax; the server checks that it holds them).
func packageRefs(field string, refs []string) error {
	if len(refs) > api.MaxPackagesPerOperation {
		return fail(field, "%d packages; at most %d per step", len(refs), api.MaxPackagesPerOperation)
	}
	seen := map[string]bool{}
	for i, r := range refs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if _, err := api.ParsePackageRef(r); err != nil {
			return fail(f, "%v", err)
		}
		if seen[r] {
			return fail(f, "%q is given twice", r)
		}
		seen[r] = true
	}
	return nil
}

// Upload checks the start of a package upload.
func Upload(r *api.UploadRequest) error {
	if err := api.CheckSHA256(r.SHA256); err != nil {
		return fail("sha256", "%v", err)
	}
	if r.Size < 0 {
		return fail("size", "%d is negative: give the file's size in bytes", r.Size)
	}
	return nil
}

// CreatePackage checks a request naming uploaded content.
func CreatePackage(r *api.CreatePackageRequest) error {
	if err := api.CheckPackageName(r.Name); err != nil {
		return fail("name", "%v", err)
	}
	if r.Version != "" {
		if err := api.CheckPackageVersion(r.Version); err != nil {
			return fail("version", "%v", err)
		}
	}
	if err := api.CheckSHA256(r.SHA256); err != nil {
		return fail("sha256", "%v", err)
	}
	return FileName("file_name", r.FileName)
}

// FileName checks a package's file name: a plain base name the script pod can create in its work directory.
func FileName(field, s string) error {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) || strings.ContainsAny(s, "/\\\x00") || s == "." || s == ".." || path.Base(s) != s {
		return fail(field, "%q is not a file name: a base name of 1..255 bytes without '/', such as app-1.2.0.tgz", s)
	}
	if i, r, bad := control(s); bad {
		return fail(field, "control character %U at byte %d: a file name is printed on terminals", r, i)
	}
	return nil
}
