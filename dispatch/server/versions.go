package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

func (s *Server) putChart(w http.ResponseWriter, r *http.Request, _ caller) error {
	version := r.PathValue("version")
	if err := validate.Version("version", version); err != nil {
		return err
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(data) < 2 || !bytes.Equal(data[:2], []byte{0x1f, 0x8b}) {
		return errf(http.StatusUnprocessableEntity, "body", "", "not a gzip-compressed chart archive: upload the .tgz that `helm package` writes")
	}
	sum := sha256.Sum256(data)
	c := api.Chart{Version: version, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), UploadedAt: time.Now().UTC()}
	if err := s.st.PutChart(r.Context(), c, data); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) getChart(w http.ResponseWriter, r *http.Request, _ caller) error {
	c, data, err := s.st.Chart(r.Context(), r.PathValue("version"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("X-Chart-SHA256", c.SHA256)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, err = w.Write(data)
	return err
}

const desiredVersionSetting = "desired_version"

func chartURL(version string) string { return "/api/v1/charts/" + version }

func (s *Server) setVersion(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.DesiredVersion
	if err := body(r, &req, validate.DesiredVersion); err != nil {
		return err
	}
	c, _, err := s.st.Chart(r.Context(), req.Version)
	if errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusUnprocessableEntity, "version", "", "no chart uploaded for version %s: upload it first (PUT /api/v1/charts/%s, or `octo-worker workers upgrade --chart FILE`)", req.Version, req.Version)
	}
	if err != nil {
		return err
	}
	dv := api.DesiredVersion{Version: req.Version, ChartURL: chartURL(req.Version), ChartSHA256: c.SHA256}
	b, _ := json.Marshal(dv)
	if err := s.st.SetSetting(r.Context(), desiredVersionSetting, string(b)); err != nil {
		return err
	}
	s.rememberVersion(dv)
	writeJSON(w, http.StatusOK, dv)
	return nil
}

func (s *Server) desiredVersion(ctx context.Context) (api.DesiredVersion, error) {
	var dv api.DesiredVersion
	v, err := s.st.Setting(ctx, desiredVersionSetting)
	if errors.Is(err, store.ErrNotFound) {
		return dv, nil
	}
	if err != nil {
		return dv, err
	}
	if err := json.Unmarshal([]byte(v), &dv); err != nil {
		return dv, fmt.Errorf("decoding the desired version: %w", err)
	}
	return dv, nil
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request, _ caller) error {
	dv, err := s.desiredVersion(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dv)
	return nil
}

// heartbeatVersion is the desired version a heartbeat answers with, read from the store at most once per
// heartbeat interval (a setting read per heartbeat was a third of an idle fleet's reads). A version set
// through this server is answered at once; one set through another replica reaches the workers a heartbeat
// interval later at most, as if their next heartbeat had gone there.
func (s *Server) heartbeatVersion(ctx context.Context) (api.DesiredVersion, error) {
	s.dvMu.Lock()
	dv, at := s.dv, s.dvAt
	s.dvMu.Unlock()
	if !at.IsZero() && time.Since(at) < s.cfg.HeartbeatInterval {
		return dv, nil
	}
	dv, err := s.desiredVersion(ctx)
	if err != nil {
		return dv, err
	}
	s.rememberVersion(dv)
	return dv, nil
}

// rememberVersion caches dv for heartbeatVersion.
func (s *Server) rememberVersion(dv api.DesiredVersion) {
	s.dvMu.Lock()
	s.dv, s.dvAt = dv, time.Now()
	s.dvMu.Unlock()
}
