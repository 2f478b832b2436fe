package postgres

import (
	"context"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Setting returns a value or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	if err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return "", readErr(err, "setting %s", key)
	}
	return v, nil
}

// SetSetting stores a value.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("storing setting %s: %w", key, err)
	}
	return nil
}

// PutChart stores or replaces the chart archive of a version.
func (s *Store) PutChart(ctx context.Context, c api.Chart, data []byte) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO charts (version, sha256, size, data, uploaded_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (version) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, data = excluded.data,
		uploaded_at = excluded.uploaded_at`, c.Version, c.SHA256, len(data), data, nanos(c.UploadedAt)); err != nil {
		return fmt.Errorf("storing chart %s: %w", c.Version, err)
	}
	return nil
}

// Chart returns a chart archive.
func (s *Store) Chart(ctx context.Context, version string) (api.Chart, []byte, error) {
	var c api.Chart
	var data []byte
	var uploaded int64
	err := s.pool.QueryRow(ctx, `SELECT version, sha256, size, data, uploaded_at FROM charts WHERE version = $1`, version).
		Scan(&c.Version, &c.SHA256, &c.Size, &data, &uploaded)
	if err != nil {
		return c, nil, readErr(err, "chart %s", version)
	}
	c.UploadedAt = fromNanos(uploaded)
	return c, data, nil
}
