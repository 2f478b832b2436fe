package postgres

// Compile-only stubs of the methods pg-logs writes (logs.go, loglimit.go, pod.go, packages.go, retention.go,
// stats.go, usage.go): each fails with errNotYet. pg-logs deletes this file once its methods exist.

import (
	"context"
	"errors"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

var errNotYet = errors.New("not implemented yet in the PostgreSQL driver")

// AppendLogs is not implemented yet.
func (s *Store) AppendLogs(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	return api.AppendLogsResponse{}, errNotYet
}

// Logs is not implemented yet.
func (s *Store) Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error) {
	return nil, errNotYet
}

// SetPodEnd is not implemented yet.
func (s *Store) SetPodEnd(ctx context.Context, ref store.LeaseRef, end api.PodEnd) error {
	return errNotYet
}

// PodEnd is not implemented yet.
func (s *Store) PodEnd(ctx context.Context, id string) (*api.PodEnd, error) { return nil, errNotYet }

// PodLease is not implemented yet.
func (s *Store) PodLease(ctx context.Context, tokenHash string) (store.PodLease, error) {
	return store.PodLease{}, errNotYet
}

// CreatePackage is not implemented yet.
func (s *Store) CreatePackage(ctx context.Context, p api.Package) (api.Package, error) {
	return api.Package{}, errNotYet
}

// Package is not implemented yet.
func (s *Store) Package(ctx context.Context, ref api.PackageRef) (api.Package, error) {
	return api.Package{}, errNotYet
}

// ListPackages is not implemented yet.
func (s *Store) ListPackages(ctx context.Context) ([]api.Package, error) { return nil, errNotYet }

// DeletePackages is not implemented yet.
func (s *Store) DeletePackages(ctx context.Context, before time.Time) ([]string, error) {
	return nil, errNotYet
}

// DeleteFinished is not implemented yet.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, batch int) (int, error) {
	return 0, errNotYet
}

// QueueStats is not implemented yet.
func (s *Store) QueueStats(ctx context.Context) ([]store.PoolQueue, error) { return nil, errNotYet }

// UsageSamples is not implemented yet.
func (s *Store) UsageSamples(ctx context.Context, f store.UsageFilter) ([]store.UsageSample, error) {
	return nil, errNotYet
}
