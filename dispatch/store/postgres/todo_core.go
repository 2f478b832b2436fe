package postgres

// Stubs of pg-core's methods until they are written (this file goes away then).

import (
	"context"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func (s *Store) CreatePool(ctx context.Context, p api.Pool) error { return errNotYet }
func (s *Store) Pool(ctx context.Context, name string) (api.Pool, error) {
	return api.Pool{}, errNotYet
}
func (s *Store) ListPools(ctx context.Context) ([]api.Pool, error)    { return nil, errNotYet }
func (s *Store) CreateToken(ctx context.Context, t store.Token) error { return errNotYet }
func (s *Store) TokenByHash(ctx context.Context, h []byte) (store.Token, error) {
	return store.Token{}, errNotYet
}
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) { return nil, errNotYet }
func (s *Store) RevokeToken(ctx context.Context, id string, now time.Time) (store.Token, error) {
	return store.Token{}, errNotYet
}
func (s *Store) CreateWorker(ctx context.Context, w store.Worker) error { return errNotYet }
func (s *Store) WorkerByTokenHash(ctx context.Context, h []byte) (store.Worker, error) {
	return store.Worker{}, errNotYet
}
func (s *Store) Worker(ctx context.Context, id string) (store.Worker, error) {
	return store.Worker{}, errNotYet
}
func (s *Store) ListWorkers(ctx context.Context) ([]store.Worker, error) { return nil, errNotYet }
func (s *Store) PoolWorkers(ctx context.Context, pool string) ([]store.Worker, error) {
	return nil, errNotYet
}
func (s *Store) Heartbeat(ctx context.Context, h store.Heartbeat) (store.HeartbeatReply, error) {
	return store.HeartbeatReply{}, errNotYet
}
func (s *Store) SetDrain(ctx context.Context, id string, drain bool) (store.Worker, error) {
	return store.Worker{}, errNotYet
}
func (s *Store) RemoveWorker(ctx context.Context, id string, now time.Time) (store.RemovedWorker, error) {
	return store.RemovedWorker{}, errNotYet
}
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	return api.Operation{}, errNotYet
}
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	return nil, errNotYet
}
func (s *Store) CreateDeployment(ctx context.Context, d store.NewDeployment) (api.Deployment, error) {
	return api.Deployment{}, errNotYet
}
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (*api.Lease, error) {
	return nil, errNotYet
}
func (s *Store) Leases(ctx context.Context, w string, now time.Time) ([]api.Lease, error) {
	return nil, errNotYet
}
func (s *Store) SetRunning(ctx context.Context, ref store.LeaseRef, m string) (api.Operation, error) {
	return api.Operation{}, errNotYet
}
func (s *Store) Finish(ctx context.Context, ref store.LeaseRef, r store.Result) (api.Operation, store.Changes, error) {
	return api.Operation{}, store.Changes{}, errNotYet
}
func (s *Store) Cancel(ctx context.Context, id string, now time.Time) (api.Operation, store.Changes, error) {
	return api.Operation{}, store.Changes{}, errNotYet
}
func (s *Store) CancelDeployment(ctx context.Context, id string, now time.Time) (api.Deployment, store.Changes, error) {
	return api.Deployment{}, store.Changes{}, errNotYet
}
func (s *Store) ExpireLeases(ctx context.Context, now time.Time) (store.Changes, error) {
	return store.Changes{}, errNotYet
}
func (s *Store) Operation(ctx context.Context, id string) (api.Operation, error) {
	return api.Operation{}, errNotYet
}
func (s *Store) OperationSummary(ctx context.Context, id string) (api.Operation, error) {
	return api.Operation{}, errNotYet
}
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]api.Operation, error) {
	return nil, errNotYet
}
func (s *Store) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	return api.Deployment{}, errNotYet
}
func (s *Store) ListDeployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	return nil, errNotYet
}
func (s *Store) SensitiveValues(ctx context.Context, id string) ([]string, error) {
	return nil, errNotYet
}
func (s *Store) Setting(ctx context.Context, key string) (string, error)      { return "", errNotYet }
func (s *Store) SetSetting(ctx context.Context, key, value string) error      { return errNotYet }
func (s *Store) PutChart(ctx context.Context, c api.Chart, data []byte) error { return errNotYet }
func (s *Store) Chart(ctx context.Context, v string) (api.Chart, []byte, error) {
	return api.Chart{}, nil, errNotYet
}
