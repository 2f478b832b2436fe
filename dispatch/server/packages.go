package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// Packages (PROTOCOL.md, Packages): content is uploaded once, resumably, into the package directory
// (pkgfiles), then named (name, version) in the store; steps reference packages, and the script pod downloads
// them with its pod token.

// files returns the package directory, or an error when this server keeps no packages.
func (s *Server) files() (*pkgfiles.Dir, error) {
	if s.cfg.Packages == nil {
		return nil, errf(http.StatusNotImplemented, "", "", "this dispatch server keeps no packages: start it with a package directory (--packages-dir)")
	}
	return s.cfg.Packages, nil
}

func writeUpload(w http.ResponseWriter, status int, u pkgfiles.Upload) {
	w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(u.Offset, 10))
	writeJSON(w, status, api.Upload{SHA256: u.SHA256, Size: u.Size, Offset: u.Offset, Complete: u.Complete})
}

func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, _ caller) error {
	files, err := s.files()
	if err != nil {
		return err
	}
	var req api.UploadRequest
	if err := body(r, &req, validate.Upload); err != nil {
		return err
	}
	if req.Size > s.cfg.MaxPackageSize {
		return errf(http.StatusRequestEntityTooLarge, "size", api.CodeTooLarge,
			"the package is %s; this server takes packages of at most %s (its --max-package-size)", byteSize(req.Size), byteSize(s.cfg.MaxPackageSize))
	}
	u, err := files.Start(req.SHA256, req.Size)
	if err != nil {
		return uploadErr(err)
	}
	writeUpload(w, http.StatusCreated, u)
	return nil
}

func (s *Server) uploadStatus(w http.ResponseWriter, r *http.Request, _ caller) error {
	files, sha, err := s.uploadOf(r)
	if err != nil {
		return err
	}
	u, err := files.Status(sha)
	if err != nil {
		return uploadErr(err)
	}
	writeUpload(w, http.StatusOK, u)
	return nil
}

func (s *Server) appendUpload(w http.ResponseWriter, r *http.Request, _ caller) error {
	files, sha, err := s.uploadOf(r)
	if err != nil {
		return err
	}
	offset, err := strconv.ParseInt(r.Header.Get(api.HeaderUploadOffset), 10, 64)
	if err != nil || offset < 0 {
		return errf(http.StatusBadRequest, api.HeaderUploadOffset, "", "header %s is %q: give the byte offset the body starts at (GET the upload for the server's)",
			api.HeaderUploadOffset, r.Header.Get(api.HeaderUploadOffset))
	}
	u, err := files.Append(sha, offset, r.Body)
	if err != nil {
		if u.SHA256 != "" {
			w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(u.Offset, 10))
		}
		return uploadErr(err)
	}
	writeUpload(w, http.StatusOK, u)
	return nil
}

// uploadErr maps pkgfiles' errors; others (a body that broke off, a timeout) go through toHTTPError.
func uploadErr(err error) error {
	var oe *pkgfiles.OffsetError
	var ce *pkgfiles.ChecksumError
	switch {
	case errors.As(err, &oe):
		return errf(http.StatusConflict, api.HeaderUploadOffset, api.CodeOffsetMismatch, "%s", oe.Error())
	case errors.As(err, &ce):
		return errf(http.StatusUnprocessableEntity, "sha256", api.CodeChecksumMismatch, "%s", ce.Error())
	case errors.Is(err, pkgfiles.ErrBusy):
		return errf(http.StatusConflict, "", api.CodeUploadBusy, "%s", err.Error())
	case errors.Is(err, pkgfiles.ErrTooLarge):
		return errf(http.StatusRequestEntityTooLarge, "", api.CodeTooLarge, "%s: nothing of it was kept; send the rest of the file only", err.Error())
	case errors.Is(err, pkgfiles.ErrNoUpload):
		return errf(http.StatusNotFound, "", "", "%s", err.Error())
	}
	return err
}

// uploadOf is the package store and the upload a route's {sha256} names.
func (s *Server) uploadOf(r *http.Request) (*pkgfiles.Dir, string, error) {
	files, err := s.files()
	if err != nil {
		return nil, "", err
	}
	sha, err := shaParam(r)
	return files, sha, err
}

func shaParam(r *http.Request) (string, error) {
	sha := r.PathValue("sha256")
	if err := api.CheckSHA256(sha); err != nil {
		return "", errf(http.StatusBadRequest, "sha256", "", "%v", err)
	}
	return sha, nil
}

func (s *Server) createPackage(w http.ResponseWriter, r *http.Request, _ caller) error {
	files, err := s.files()
	if err != nil {
		return err
	}
	var req api.CreatePackageRequest
	if err := body(r, &req, validate.CreatePackage); err != nil {
		return err
	}
	size, err := files.Claim(req.SHA256) // before the store names it, so a retention run now keeps it
	if err != nil {
		return errf(http.StatusUnprocessableEntity, "sha256", "", "the server holds no content sha256:%s: upload it completely first (POST /api/v1/packages/uploads)", req.SHA256)
	}
	if req.Version == "" {
		req.Version = req.SHA256[:12]
	}
	p, err := s.st.CreatePackage(r.Context(), api.Package{Name: req.Name, Version: req.Version, SHA256: req.SHA256, Size: size,
		FileName: req.FileName, CreatedAt: time.Now().UTC()})
	if errors.Is(err, store.ErrExists) {
		return errf(http.StatusConflict, "version", api.CodeExists, "%s", trimStore(err))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) listPackages(w http.ResponseWriter, r *http.Request, _ caller) error {
	list, err := s.st.ListPackages(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PackageList{Packages: list})
	return nil
}

// resolvePackages resolves a step's package references (prefix is its path in the request: "" or
// "steps[2]."), refusing one the server does not hold with the field named.
func (s *Server) resolvePackages(ctx context.Context, prefix string, spec *api.OperationSpec) ([]api.Package, error) {
	var out []api.Package
	for i, r := range spec.Packages {
		ref, err := api.ParsePackageRef(r)
		if err != nil { // validated before: unreachable
			return nil, errf(http.StatusUnprocessableEntity, fmt.Sprintf("%spackages[%d]", prefix, i), "", "%v", err)
		}
		p, err := s.st.Package(ctx, ref)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errf(http.StatusUnprocessableEntity, fmt.Sprintf("%spackages[%d]", prefix, i), "",
				"the server holds no package %s: push it first (`octo-worker package push FILE --name %s`), or see `octo-worker package list`", ref, ref.Name)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// podPackage serves one of the pod's operation's packages; Range requests resume a broken download.
func (s *Server) podPackage(w http.ResponseWriter, r *http.Request, c caller) error {
	files, err := s.files()
	if err != nil {
		return err
	}
	sha, err := shaParam(r)
	if err != nil {
		return err
	}
	op, err := s.st.Operation(r.Context(), c.pod.OperationID)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(op.ResolvedPackages, func(p api.Package) bool { return p.SHA256 == sha }) {
		return errf(http.StatusForbidden, "sha256", "", "operation %s references no package sha256:%s: a pod token reads only its own operation's packages", op.ID, sha)
	}
	f, err := os.Open(files.Path(sha))
	if err != nil {
		return fmt.Errorf("opening package content %s: %w", sha, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}
