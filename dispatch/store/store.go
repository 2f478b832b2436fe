// Package store is the storage seam of the dispatch server: the interfaces a storage driver implements (pools,
// registration tokens, workers, the operation queue with its leases, logs, settings) and the rules every
// driver keeps. The SQLite driver lives in store/sqlite, the PostgreSQL one in store/postgres; store/storetest
// is the conformance suite that every driver must pass.
//
// The rules, which the conformance suite checks:
//   - Claiming an operation is one atomic statement: an operation is leased to at most one worker, once. An
//     operation is never handed out again: when its lease expires it becomes lost.
//   - Lease expiry re-checks the lease id and the expiry in its WHERE clause, so a renewal that commits first
//     wins.
//   - A worker touches an operation only through a LeaseRef naming its live lease.
//   - Log lines with seq >= 1 are stored once per (operation, seq); seq 0 lines are appended as they come.
//     Every stored line gets a position (Pos) that is strictly increasing in commit order, so a follower that
//     has seen Pos p never misses a line committed later with a smaller Pos (the cut marker below excepted).
//   - An operation leased with a log limit (ClaimParams.LogLimit) keeps at most that many bytes of log
//     (LogLineBytes per line) plus one batch. Past it the driver keeps the head, the numbered lines 1..h that
//     hold (with the notes among them) at least half the limit, and the tail; it drops the lines between,
//     lowest seq first, and keeps one marker line in their place: seq 0, stream system, CutMarker's text with
//     the exact count of the lines and bytes dropped so far, at the position of the last line dropped, so a
//     follower whose cursor lies before a dropped line meets the marker. Dropped seqs count as stored: the
//     contiguous end walks over them, and a re-sent dropped line is a retry whatever its text (the text is
//     gone). Only lines at or before the contiguous end are dropped (a line beyond a gap would be asked for
//     again), never the line at it, and never the worker's notes stored apart from numbered lines.
//   - A result with state succeeded needs exit code 0, and a result is refused while the server's contiguous
//     log is shorter than the result's last_seq.
//   - Deployment steps become claimable one at a time; a step that ends in any state but succeeded cancels the
//     steps after it.
//   - Sensitive variable values are kept apart from the operation's spec, returned in clear only in a Lease,
//     and erased when the operation ends. So are the pod token's hash and the sealing key a lease stores
//     (ClaimParams): a pod token names its one operation only while that operation is leased or running.
//   - Removing a worker deletes its row; there is no tombstone. Its token stops authenticating with the commit
//     and it leaves every list, and a second removal is ErrNotFound. A tombstone would have to be filtered by
//     every query that authenticates, lists or leases, and one forgotten filter is a removed worker's token
//     that still works. The history stays with the operations: they keep the worker's id, and the message of
//     those it held names it.
//   - Removing a worker ends its leases in the same transaction: the operations it held (leased or running)
//     become lost, like on lease expiry and for the same reason: its Jobs may still be running the script, so
//     running it again elsewhere could run it twice. Its queued operations are untouched (they belong to a
//     pool, not to a worker), and a deployment whose step is lost stops as on expiry.
//   - Claim and CreateLeasedOperation lease only to a worker that exists when they commit, so a removed
//     worker's long-poll still in flight is handed nothing. Who gets work is decided in that same statement:
//     the worker was not asked to drain, its last heartbeat reported healthy and came at or after
//     ClaimParams.HeartbeatSince (see WorkerState), and it holds fewer live leases than its capacity. So a
//     drain, a failed check or a full worker also stops a long-poll already waiting; the operation stays
//     queued for another worker.
//   - An operation with a target worker (NewOperation.TargetWorker: a health check an admin asked for) is
//     claimed by that worker only, before the other operations of its pools and whatever its health; it still
//     needs a free slot and a worker not asked to drain. Removing the worker cancels its targeted operations
//     still queued.
//   - Pod profiles: an operation that names a profile (OperationSpec.Profile) is claimed only by a worker that
//     offers it (ClaimParams.Profiles), in the statement that leases, like capabilities (Offer.Takes). Workers
//     store the profiles and override allow-list of their registration, replaced by a heartbeat that has them.
//   - Retention (DeleteFinished) deletes history that ended before a cutoff, and nothing else: an operation
//     outside a deployment once it ended before the cutoff, with its logs; a deployment once every one of its
//     steps ended, the last before the cutoff, with all its steps and their logs (a deployment is never shown
//     with some of its steps gone). Nothing that has not ended is deleted, however old; pools, tokens, workers,
//     settings and charts are kept. "Before" is strict: what ended at the cutoff stays.
//   - An operation keeps the packages it references (a foreign key): DeletePackages deletes only packages
//     created before its cutoff that no stored operation references.
//   - A driver keeps no sensitive value of an ended operation anywhere on disk (its files, journals and free
//     space included), and gives the space of deleted history back to the file system. The SQLite driver
//     does; PostgreSQL cannot overwrite freed bytes, so its driver removes every row version that holds the
//     values and vacuums deleted history, and store/postgres/erase.go says exactly what stays on its disk.
//
// The rules a driver would otherwise write again word for word (a deployment's state from its steps', which
// results are valid, what a LeaseRef must match, the messages on operations the store ends) are plain functions
// in rules.go that every driver calls.
//
// Times are passed in by the caller (now), so drivers hold no clock and tests control expiry.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Store is everything the dispatch server keeps.
type Store interface {
	Pools
	Tokens
	Workers
	Queue
	Logs
	Settings
	Retention
	UsageHistory
	Packages
	Sessions
	// Close releases the store's resources.
	Close() error
}

// Pools keeps worker pools.
type Pools interface {
	// CreatePool stores a new pool; ErrExists when one has the name.
	CreatePool(ctx context.Context, p api.Pool) error
	// Pool returns one pool or ErrNotFound.
	Pool(ctx context.Context, name string) (api.Pool, error)
	// ListPools returns every pool ordered by name.
	ListPools(ctx context.Context) ([]api.Pool, error)
}

// Token is a registration token as stored: the secret itself is never kept, only its SHA-256.
type Token struct {
	ID        string
	Hash      []byte
	Pools     []string
	CreatedAt time.Time
	ExpiresAt time.Time
	RevokedAt *time.Time
}

// Tokens keeps registration tokens.
type Tokens interface {
	CreateToken(ctx context.Context, t Token) error
	// TokenByHash returns the token whose secret hashes to hash, or ErrNotFound. Expired and revoked tokens
	// are returned too: the caller decides, so it can say why a token is refused.
	TokenByHash(ctx context.Context, hash []byte) (Token, error)
	// ListTokens returns every token, newest first.
	ListTokens(ctx context.Context) ([]Token, error)
	// RevokeToken marks a token revoked at now (idempotent: a second revoke keeps the first time).
	RevokeToken(ctx context.Context, id string, now time.Time) (Token, error)
}

// Worker is a registered worker as stored. Healthy in api.Worker is the worker's own report; whether its
// heartbeat is recent is for the caller to judge from LastHeartbeat.
type Worker struct {
	api.Worker
	TokenHash []byte // SHA-256 of the worker token
	TokenID   string // the registration token it registered with
}

// Heartbeat is a worker's heartbeat as the store applies it.
type Heartbeat struct {
	WorkerID string
	api.HeartbeatRequest
	Now time.Time
	// LeaseExpiresAt is the new expiry of the leases of the operations in Running that this worker holds.
	LeaseExpiresAt time.Time
}

// HeartbeatReply is what the store tells a heartbeating worker.
type HeartbeatReply struct {
	// Cancel lists operations the worker must stop: live leases with a cancel request, and operations in the
	// heartbeat's Running list that the worker no longer holds (lost, finished or unknown).
	Cancel []string
	// Drain is true when an admin asked the worker to drain.
	Drain bool
}

// Touch is a heartbeat that changed nothing of its worker but the times (TouchWorkers): a server keeps such
// heartbeats in memory and writes them in batches.
type Touch struct {
	WorkerID string
	// Prev is the last heartbeat the writer of this touch wrote for the worker: the touch applies only while
	// the stored one is still Prev, so it never overwrites a heartbeat written through another server.
	Prev time.Time
	// At is the heartbeat's time; LastCheck when the worker's health checks ran (zero: never).
	At, LastCheck time.Time
}

// Workers keeps registered workers.
type Workers interface {
	CreateWorker(ctx context.Context, w Worker) error
	// WorkerByTokenHash returns the worker whose token hashes to hash, or ErrNotFound.
	WorkerByTokenHash(ctx context.Context, hash []byte) (Worker, error)
	// Worker returns one worker, or ErrNotFound.
	Worker(ctx context.Context, id string) (Worker, error)
	// ListWorkers returns every worker ordered by registration time.
	ListWorkers(ctx context.Context) ([]Worker, error)
	// PoolWorkers returns the workers registered into pool.
	PoolWorkers(ctx context.Context, pool string) ([]Worker, error)
	// Heartbeat records a heartbeat (with the health it reports: OK, message, checks, when they ran), renews the leases of the listed operations the worker still holds and
	// says what to cancel. ErrNotFound when the worker does not exist.
	Heartbeat(ctx context.Context, h Heartbeat) (HeartbeatReply, error)
	// TouchWorkers records idle heartbeats in one write: each sets its worker's last heartbeat to At and last
	// check to LastCheck (NULL when zero), where the stored last heartbeat is still Prev. It returns, by worker
	// id, the drain request of each worker it touched; a worker missing from it was removed, or heartbeated
	// since through another path (the caller writes that worker's next heartbeat in full).
	TouchWorkers(ctx context.Context, touches []Touch) (map[string]bool, error)
	// SetDrain records an admin's drain request for a worker.
	SetDrain(ctx context.Context, workerID string, drain bool) (Worker, error)
	// RemoveWorker deletes a worker (its token stops authenticating) and, in the same transaction, makes the
	// operations it holds lost (see the rules above). ErrNotFound when no worker has the id, which includes a
	// worker removed before.
	RemoveWorker(ctx context.Context, id string, now time.Time) (RemovedWorker, error)
}

// RemovedWorker is what removing a worker did.
type RemovedWorker struct {
	// Worker is the worker as it was stored.
	Worker Worker
	// Lost lists the operations it held (leased or running), now lost, oldest first.
	Lost []string
	// Changes has Lost and the deployment steps cancelled after a lost step in Ended.
	Changes Changes
}

// NewOperation is an operation to enqueue. Spec carries sensitive values in clear; the store keeps them
// apart.
type NewOperation struct {
	ID        string
	Spec      api.OperationSpec
	CreatedAt time.Time
	// TargetWorker, when set, is the only worker that may claim the operation (see the rules above). Only
	// CreateOperation takes it.
	TargetWorker string
	// Packages are the packages Spec.Packages resolved to, in order (api.Operation.ResolvedPackages). The
	// store refuses (ErrNotFound) a package it does not hold, and keeps every one it holds while the
	// operation exists.
	Packages []api.Package
}

// NewDeployment is a deployment to enqueue: its steps run in order, each as one operation.
type NewDeployment struct {
	ID        string
	Name      string
	Steps     []NewOperation
	CreatedAt time.Time
}

// Ready is an operation that just became claimable: the caller wakes a waiting worker that can take it.
type Ready struct {
	ID           string
	Pool         string
	Capabilities []string
	Profile      string
}

// Changes says what a state change did beyond its own operation.
type Changes struct {
	// Ready lists operations that became claimable (a deployment's next step).
	Ready []Ready
	// Ended lists operations that reached a terminal state (their log followers end).
	Ended []string
}

// ClaimParams asks for one claimable operation for a worker.
type ClaimParams struct {
	WorkerID     string
	Pools        []string
	Capabilities []string
	// Profiles are the pod profiles the worker offers: an operation naming a profile goes only to a worker
	// offering it.
	Profiles []string
	// RequestID, when set, makes the claim idempotent: a live lease already granted to this worker for the
	// same request id is returned instead of a new one.
	RequestID string
	LeaseID   string // id of the new lease
	Now       time.Time
	ExpiresAt time.Time
	// HeartbeatSince is the oldest last heartbeat a worker may have to be leased to (HeartbeatSince(now,
	// interval)); the zero time checks nothing.
	HeartbeatSince time.Time
	// PodTokenHash (hex SHA-256 of the pod token the caller minted) and SealingKey are stored on the operation
	// the claim leases, for the script pod's channel (see PodLease); the lease carries SealingKey. A claim
	// that replays a request id replaces the stored hash (the reply with the old token was lost) and returns
	// the stored key. Empty: the pod has no channel.
	PodTokenHash string
	SealingKey   []byte
	// LogLimit is recorded on the operation leased: the most bytes of log kept of it (see the rules above);
	// 0: no limit. The server passes the worker's limit or api.DefaultLogLimit.
	LogLimit int64
}

// PodLease is what a pod token names: an operation and its lease, while the operation is leased or running.
// The token dies when the operation ends; the caller checks ExpiresAt against its clock.
type PodLease struct {
	OperationID string
	LeaseID     string
	WorkerID    string
	ExpiresAt   time.Time
	// SealingKey opens the lines the pod pushes.
	SealingKey []byte
	// LastSeq is the highest seq the operation's log holds contiguously; End the marker the pod pushed, if any.
	LastSeq int64
	End     *api.PodEnd
}

// LeaseRef names a worker's lease on an operation. Every worker call on an operation passes one.
type LeaseRef struct {
	OperationID string
	LeaseID     string
	WorkerID    string
	Now         time.Time // a lease whose expiry is before Now is refused with ErrLeaseLost
}

// Result ends a leased operation.
type Result struct {
	State    api.State
	ExitCode *int
	Message  string
	LastSeq  int64
	Usage    *api.Usage // what the script consumed, when measured
}

// OperationFilter selects operations to list. Empty fields match everything.
type OperationFilter struct {
	State        api.State
	Pool         string
	WorkerID     string
	DeploymentID string
	Limit        int // at most this many, newest first; 0 means 100
}

// Queue keeps operations, deployments and their leases.
type Queue interface {
	// CreateOperation enqueues one operation (ErrNotFound when its pool does not exist).
	CreateOperation(ctx context.Context, op NewOperation) (api.Operation, error)
	// CreateLeasedOperation enqueues an operation already leased to a worker waiting for one (a direct
	// hand-off: one transaction instead of an enqueue and a claim), with the lease fields a Claim with p would
	// set. p.Pools and p.Capabilities are not checked: the caller matched them (with Matches). It returns nil, and
	// stores nothing, when the worker may not take work now (it was removed, asked to drain, reported a failed
	// check, fell silent or is full, while it waited: see the rules): the caller enqueues the operation instead.
	CreateLeasedOperation(ctx context.Context, op NewOperation, p ClaimParams) (*api.Lease, error)
	// CreateDeployment enqueues a deployment; only its first step is claimable.
	CreateDeployment(ctx context.Context, d NewDeployment) (api.Deployment, error)
	// Claim leases the oldest operation targeted at the worker, else the oldest claimable operation of the
	// worker's pools whose required capabilities the worker has; nil when there is none, or the worker may
	// not take work now (it no longer exists, is asked to drain, unhealthy, silent or full: see the rules).
	Claim(ctx context.Context, p ClaimParams) (*api.Lease, error)
	// Leases returns the live leases a worker holds, oldest first.
	Leases(ctx context.Context, workerID string, now time.Time) ([]api.Lease, error)
	// SetRunning moves a leased operation to running (idempotent).
	SetRunning(ctx context.Context, ref LeaseRef, message string) (api.Operation, error)
	// Finish ends a leased operation. Replaying the same terminal state with the same lease succeeds and
	// changes nothing, so a worker may retry it.
	Finish(ctx context.Context, ref LeaseRef, r Result) (api.Operation, Changes, error)
	// Cancel cancels a queued operation at once, or asks the worker holding a live one to stop.
	// ErrFinished when it already ended.
	Cancel(ctx context.Context, id string, now time.Time) (api.Operation, Changes, error)
	// CancelDeployment cancels the deployment's queued steps and asks the worker of its live step to stop.
	CancelDeployment(ctx context.Context, id string, now time.Time) (api.Deployment, Changes, error)
	// ExpireLeases marks the operations whose lease expired before now as lost.
	ExpireLeases(ctx context.Context, now time.Time) (Changes, error)
	// Operation returns one operation with its spec; sensitive values are masked.
	Operation(ctx context.Context, id string) (api.Operation, error)
	// OperationSummary returns one operation without script, files and variables (cheap: for polling state).
	OperationSummary(ctx context.Context, id string) (api.Operation, error)
	// ListOperations returns operation summaries (no script, files or variables), newest first.
	ListOperations(ctx context.Context, f OperationFilter) ([]api.Operation, error)
	// Deployment returns one deployment with summaries of its steps in order.
	Deployment(ctx context.Context, id string) (api.Deployment, error)
	// ListDeployments returns deployments, newest first, with summaries of their steps.
	ListDeployments(ctx context.Context, limit int) ([]api.Deployment, error)
	// SensitiveValues returns the sensitive variable values of an operation that has not ended (none after).
	SensitiveValues(ctx context.Context, id string) ([]string, error)
	// PodLease returns the lease of the leased or running operation whose pod token hashes to tokenHash (hex
	// SHA-256), or ErrNotFound (no such token, or its operation ended).
	PodLease(ctx context.Context, tokenHash string) (PodLease, error)
	// QueueStats returns the queue of every pool, ordered by name, pools with nothing queued included (with
	// Depth 0). Its cost grows with the number of pools and of claimable operations, not with history.
	QueueStats(ctx context.Context) ([]PoolQueue, error)
}

// PoolQueue is one pool's queue: what the server's metrics (and an autoscaler) read.
type PoolQueue struct {
	Pool string
	// Depth counts the claimable operations waiting for a worker: queued, and not a deployment step waiting
	// for the step before it.
	Depth int
	// FirstSince is when the operation first in line (the next a worker of the pool claims) became claimable:
	// its creation, or for a deployment's later step the end of the step before it. Zero when Depth is 0.
	FirstSince time.Time
}

// Logs keeps operations' log lines.
type Logs interface {
	// AppendLogs stores lines of a leased operation (already masked by the caller) and says how far the log
	// is contiguous. A line whose seq is stored already is dropped when its stream and text are the stored
	// ones (a retry); when they differ the whole batch is refused with a *LogConflictError and nothing of it
	// is stored: the first text stays, and the worker learns that it sent two different lines under one seq.
	AppendLogs(ctx context.Context, ref LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error)
	// Logs returns up to limit lines of an operation with Pos > after, in Pos order.
	Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error)
	// SetPodEnd records the end-of-stream marker the script pod of a leased operation pushed (the first stays).
	SetPodEnd(ctx context.Context, ref LeaseRef, end api.PodEnd) error
	// PodEnd returns the marker SetPodEnd recorded, or nil; ErrNotFound when the operation does not exist.
	PodEnd(ctx context.Context, id string) (*api.PodEnd, error)
}

// UsageFilter selects the operations whose usage the requests advice reads.
type UsageFilter struct {
	Pool  string // required
	Name  string // an operation's (step's) name; empty: every operation of the pool
	Limit int    // the newest this many
}

// UsageSample is one ended operation's measured usage and how long its script ran.
type UsageSample struct {
	Usage    api.Usage
	Duration time.Duration // started to finished; 0 when it never started
}

// UsageHistory reads what ended operations consumed.
type UsageHistory interface {
	// UsageSamples returns the measured usage of the newest ended operations that match f, newest first.
	UsageSamples(ctx context.Context, f UsageFilter) ([]UsageSample, error)
}

// Retention deletes old history (see the rules above).
type Retention interface {
	// DeleteFinished deletes the operations and deployments that ended before before, with their logs, and
	// returns how many operations it deleted (deployment steps included). It deletes in writes of about batch
	// operations each (a deployment goes whole, in one write, even when it has more steps), so other writes
	// are not held up behind one long delete, and each write gives the space it freed back to the file system.
	// ErrInvalid when batch is not positive.
	DeleteFinished(ctx context.Context, before time.Time, batch int) (n int, err error)
	// DeletePackages deletes the packages created before before that no operation references, and returns
	// the SHA-256 of the content that no package names any more (the caller deletes those files).
	DeletePackages(ctx context.Context, before time.Time) (unused []string, err error)
}

// Packages keeps the metadata of packages (their content lives in files the server keeps, named by SHA-256).
type Packages interface {
	// CreatePackage stores a package. Storing the same name, version and SHA-256 again returns the stored
	// one; ErrExists when the name and version hold another SHA-256.
	CreatePackage(ctx context.Context, p api.Package) (api.Package, error)
	// Package resolves a reference (by SHA-256 when ref.SHA256 is set, the oldest package of that name and
	// content; else by version), or ErrNotFound.
	Package(ctx context.Context, ref api.PackageRef) (api.Package, error)
	// ListPackages returns every package ordered by name, newest first within a name.
	ListPackages(ctx context.Context) ([]api.Package, error)
}

// Settings keeps server-wide values and chart archives.
type Settings interface {
	// Setting returns a value or ErrNotFound.
	Setting(ctx context.Context, key string) (string, error)
	SetSetting(ctx context.Context, key, value string) error
	// PutChart stores (or replaces) the chart archive of a version.
	PutChart(ctx context.Context, c api.Chart, data []byte) error
	// Chart returns a chart archive or ErrNotFound.
	Chart(ctx context.Context, version string) (api.Chart, []byte, error)
}

// Errors every driver returns (wrapped) so callers can tell them apart with errors.Is / errors.As.
var (
	ErrNotFound  = errors.New("not found")
	ErrExists    = errors.New("already exists")
	ErrNotLeased = errors.New("operation is not leased to this worker")
	ErrLeaseLost = errors.New("lease is no longer live")
	ErrFinished  = errors.New("already finished")
	ErrInvalid   = errors.New("invalid")
)

// MissingLinesError refuses a result whose last_seq is beyond the contiguous log the store holds.
type MissingLinesError struct {
	Have, Want int64
}

func (e *MissingLinesError) Error() string {
	return fmt.Sprintf("the server holds log lines 1..%d contiguously but the result says %d: re-send lines %d..%d first",
		e.Have, e.Want, e.Have+1, e.Want)
}

// LogConflictError refuses a log batch that holds, under a seq the store holds already, a line with another
// stream or text. Index is the line's index in the batch (the first such line, in batch order).
type LogConflictError struct {
	Seq   int64
	Index int
}

func (e *LogConflictError) Error() string {
	return fmt.Sprintf("line seq %d is stored already with a different stream or text: a seq names one line; "+
		"nothing of this batch was stored (re-send only the lines after the server's last_seq)", e.Seq)
}

// LeaseLostError says why a lease is no longer live.
type LeaseLostError struct {
	OperationID string
	State       api.State
	Expired     bool
}

func (e *LeaseLostError) Error() string {
	if e.Expired && e.State == api.StateLost {
		return fmt.Sprintf("operation %s is lost (its lease expired, or its worker was removed) and will not run again", e.OperationID)
	}
	if e.Expired {
		return fmt.Sprintf("the lease on operation %s expired; the operation is lost and will not run again", e.OperationID)
	}
	return fmt.Sprintf("operation %s is %s; its lease has ended", e.OperationID, e.State)
}

// Is makes errors.Is(err, ErrLeaseLost) true.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }
