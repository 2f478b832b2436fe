// Package api holds the wire types of the dispatch protocol: the JSON bodies that the dispatch server and its
// clients (the worker agent and the CLI) exchange under /api/v1. It has no behaviour beyond small helpers on
// the types, so that both sides compile against one definition. PROTOCOL.md at the repository root describes
// the endpoints that carry these types.
package api

import "time"

// Limits of the protocol (PROTOCOL.md, Limits). The server refuses what exceeds them; clients size what they
// send by them.
const (
	// MaxOperationBytes bounds an operation's script + files + variables: the worker ships them in one
	// Kubernetes Secret, which holds at most 1 MiB; the rest is headroom for the Secret's own fields.
	MaxOperationBytes = 900 << 10
	// MaxLogLines and MaxLogBatchBytes bound one log batch; MaxLineBytes one line's text.
	MaxLogLines      = 5000
	MaxLogBatchBytes = 4 << 20
	MaxLineBytes     = 64 << 10
	// MaxLeaseWait is the longest a lease long-poll waits for an operation (LeaseRequest.WaitSeconds); workers
	// poll with it.
	MaxLeaseWait = 30 * time.Second
	// MaxMessageLen bounds messages (results, health).
	MaxMessageLen = 4096
	// MaxPollsPerWorker bounds the lease long-polls one worker holds open at once (the agent holds one); more
	// are refused with 429 CodeTooManyPolls.
	MaxPollsPerWorker = 4
	// MaxExitCode is the highest process exit code (a script killed by signal n ends with 128+n).
	MaxExitCode = 255
)

// MinLogTime and MaxLogTime bound a log line's time: the times a store keeps as Unix nanoseconds in an int64
// (1677-09-21 .. 2262-04-11), rounded inwards to whole days. A time outside them would wrap around.
var (
	MinLogTime = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxLogTime = time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC)
)

// CapabilityDocker is the capability no octo-worker has, and NoDocker why: operations that need it are
// refused at submit (the server), by the worker (its refusal), and a worker may not advertise it (chartgen).
const (
	CapabilityDocker = "docker"
	NoDocker         = "octo-worker runs each step as a Kubernetes Job, in a pod without a Docker daemon"
)

// State is an operation's lifecycle state.
type State string

// Operation states. Queued, leased and running are live; the rest are terminal.
const (
	StateQueued    State = "queued"    // waiting for a worker of its pool
	StateLeased    State = "leased"    // a worker holds a lease and is starting it
	StateRunning   State = "running"   // the worker reported that it started (its Job exists)
	StateSucceeded State = "succeeded" // exit code 0
	StateFailed    State = "failed"    // non-zero exit code, or the worker could not run it (message says why)
	StateCancelled State = "cancelled" // cancelled by a user before it finished
	StateTimedOut  State = "timed-out" // ran past its timeout
	StateLost      State = "lost"      // its lease expired: the worker vanished; it is not run again
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCancelled, StateTimedOut, StateLost:
		return true
	}
	return false
}

// Resources are Kubernetes resource quantities, as strings ("250m", "512Mi").
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// Variable is a named value passed to the script as an environment variable. Sensitive values are masked in
// everything the server stores or shows, and never appear unsealed in pod logs.
type Variable struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Sensitive bool   `json:"sensitive,omitempty"`
}

// File is a file placed in the script's working directory before it runs.
type File struct {
	Path    string `json:"path"`    // relative, slash-separated, no ".."
	Content []byte `json:"content"` // base64 in JSON
	Mode    uint32 `json:"mode,omitempty"`
}

// OperationSpec is what a user submits: one script step.
type OperationSpec struct {
	Name           string     `json:"name,omitempty"`
	Pool           string     `json:"pool"`
	Script         string     `json:"script"`
	Syntax         string     `json:"syntax,omitempty"` // bash (default), sh, python3, pwsh
	Files          []File     `json:"files,omitempty"`
	Variables      []Variable `json:"variables,omitempty"`
	Image          string     `json:"image,omitempty"`    // container image; empty means the worker-tools image
	Requests       *Resources `json:"requests,omitempty"` // capped by the worker's configured maximum
	TimeoutSeconds int        `json:"timeout_seconds,omitempty"`
	Capabilities   []string   `json:"capabilities,omitempty"` // required worker capabilities, e.g. "docker"

	// Packages are references (NAME@sha256:HEX or NAME@VERSION) to packages the server holds; the script pod
	// unpacks them into its work directory before the script runs. The server refuses one it does not hold.
	Packages []string `json:"packages,omitempty"`
	// Profile names the pod profile the step runs with (a worker of the pool must offer it); empty: the
	// worker's default pod settings. Overrides change the pod beyond it, where the worker allows it.
	Profile   string        `json:"profile,omitempty"`
	Overrides *PodOverrides `json:"overrides,omitempty"`
}

// Operation is an operation as the server holds it.
type Operation struct {
	ID           string `json:"id"`
	DeploymentID string `json:"deployment_id,omitempty"`
	Step         int    `json:"step,omitempty"` // 1-based position in its deployment
	OperationSpec
	State           State      `json:"state"`
	ExitCode        *int       `json:"exit_code,omitempty"`
	Message         string     `json:"message,omitempty"`
	WorkerID        string     `json:"worker_id,omitempty"`
	CancelRequested bool       `json:"cancel_requested,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	Usage           *Usage     `json:"usage,omitempty"` // what the script consumed, when its runner measured it

	// ResolvedPackages are the packages Packages named when the operation was submitted, in order: what the
	// script pod downloads (by SHA256) and unpacks.
	ResolvedPackages []Package `json:"resolved_packages,omitempty"`
}

// LogLine is one line of an operation's output.
//
// Seq numbers lines produced by the script's runner, from 1, without gaps; appending is idempotent on
// (operation, seq). Seq 0 marks a line the worker itself adds (pod events, "waiting for capacity"): such lines
// are appended as they come, not deduplicated. Pos is the server's position in the stored log, used as the
// cursor when following; it is set only in what the server returns.
type LogLine struct {
	Pos    int64     `json:"pos,omitempty"`
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // stdout, stderr or system
	Text   string    `json:"text"`
}

// Log streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamSystem = "system"
)

// Error is the body of every non-2xx reply.
type Error struct {
	Error string `json:"error"`           // human message: what is wrong and what to do
	Field string `json:"field,omitempty"` // the request field at fault, as a JSON path ("steps[2].image")
	Code  string `json:"code,omitempty"`  // machine-readable reason, one of the Code* constants
	// LastSeq accompanies CodeMissingLines: the highest contiguous log sequence the server holds.
	LastSeq int64 `json:"last_seq,omitempty"`
}

// Error codes: the reasons a client acts on differently. Other errors carry no code; their HTTP status says
// enough (400 malformed request, 401/403 authentication, 404 unknown object, 413 too large, 422 invalid).
const (
	// CodeLeaseLost (410): the worker's lease on the operation has ended (expired, so the operation is lost,
	// or the operation already finished). The worker must stop the operation and forget it.
	CodeLeaseLost = "lease_lost"
	// CodeNotLeased (403): the operation is not leased to this worker (or the lease id does not match).
	CodeNotLeased = "not_leased"
	// CodeMissingLines (409): a result names a last_seq beyond the contiguous log the server holds; re-send
	// the lines after Error.LastSeq, then the result again.
	CodeMissingLines = "missing_lines"
	// CodeLogConflict (409): a log batch holds, under a seq the server holds already, another stream or text;
	// nothing of the batch was stored. Field names the first such line ("lines[3].text").
	CodeLogConflict = "log_conflict"
	// CodeTooManyPolls (429): the worker already holds api.MaxPollsPerWorker lease long-polls open.
	CodeTooManyPolls = "too_many_polls"
	// CodeAlreadyFinished (409): the operation or deployment is already in a terminal state.
	CodeAlreadyFinished = "already_finished"
	// CodeExists (409): an object with that name already exists.
	CodeExists = "exists"
	// CodeCapability (422): no registered worker of the pool offers a required capability.
	CodeCapability = "capability_unavailable"
	// CodeTooLarge (413 for a body, 422 for an operation): a size limit was exceeded; the message names it.
	CodeTooLarge = "too_large"
)

// LogEvent is one record of the NDJSON stream returned by GET /api/v1/operations/{id}/logs: either a stored
// line or, last, the operation's end. A stream without an end record stopped early (server shutdown, network);
// resume it with ?after= the last line's Pos.
type LogEvent struct {
	Line *LogLine `json:"line,omitempty"`
	End  *LogEnd  `json:"end,omitempty"`
}

// LogEnd closes a log stream: the operation reached a terminal state and every stored line was sent.
type LogEnd struct {
	State    State  `json:"state"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Message  string `json:"message,omitempty"`
}

// ---- admin (user) requests ----

// CreatePoolRequest creates a worker pool. Name is a DNS label (lower-case letters, digits, '-', at most 63):
// it ends up in Kubernetes labels.
type CreatePoolRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// PoolList is the reply to GET /api/v1/pools.
type PoolList struct {
	Pools []Pool `json:"pools"`
}

// TokenList is the reply to GET /api/v1/tokens (never carries the secrets).
type TokenList struct {
	Tokens []RegistrationToken `json:"tokens"`
}

// OperationList is the reply to GET /api/v1/operations: summaries, newest first. Script, files and variables
// are left out of a list; GET /api/v1/operations/{id} returns them (sensitive values masked).
type OperationList struct {
	Operations []Operation `json:"operations"`
}

// DeploymentList is the reply to GET /api/v1/deployments, newest first; the operations are summaries.
type DeploymentList struct {
	Deployments []Deployment `json:"deployments"`
}

// WorkerList is the reply to GET /api/v1/workers.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// DrainRequest asks a worker to stop taking operations (drain true) or to resume (drain false). The worker
// learns it from its next heartbeat reply.
type DrainRequest struct {
	Drain bool `json:"drain"`
}

// WorkerRemoval is the reply to removing a worker, by an admin (DELETE /api/v1/workers/{id}) or by the worker
// itself (POST /api/v1/worker/deregister). The worker's token stopped working with the removal; the
// operations it held became lost (their result is unknown: its Jobs may still be running), never re-run.
type WorkerRemoval struct {
	// Worker is the worker as it was when it was removed.
	Worker Worker `json:"worker"`
	// Lost lists the operations the worker held (leased or running), now lost, oldest first.
	Lost []string `json:"lost"`
	// Cancelled lists the deployment steps that will not run because a step before them was lost.
	Cancelled []string `json:"cancelled"`
}

// DesiredVersion is the worker version the server wants every worker to run, and the chart archive that
// installs it. PUT /api/v1/version sets Version (the chart for it must have been uploaded first with
// PUT /api/v1/charts/{version}); ChartURL and ChartSHA256 are filled in by the server.
type DesiredVersion struct {
	Version     string `json:"version"`
	ChartURL    string `json:"chart_url,omitempty"`
	ChartSHA256 string `json:"chart_sha256,omitempty"`
}

// Chart describes an uploaded chart archive.
type Chart struct {
	Version    string    `json:"version"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	UploadedAt time.Time `json:"uploaded_at"`
}

// Pool is a worker pool.
type Pool struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// CreateTokenRequest asks for a registration token for one or more pools.
type CreateTokenRequest struct {
	Pools      []string `json:"pools"`
	TTLSeconds int      `json:"ttl_seconds,omitempty"` // default 24 h
}

// RegistrationToken describes a registration token. Token (the secret) is returned once, at creation.
type RegistrationToken struct {
	ID        string     `json:"id"`
	Token     string     `json:"token,omitempty"`
	Pools     []string   `json:"pools"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// DeploymentSpec is an ordered list of steps; a failed step stops the rest and fails the deployment.
type DeploymentSpec struct {
	Name  string          `json:"name"`
	Pool  string          `json:"pool,omitempty"` // default pool for steps that name none
	Steps []OperationSpec `json:"steps"`
}

// Deployment is a deployment as the server holds it.
type Deployment struct {
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	State      State       `json:"state"` // queued, running, succeeded, failed, cancelled
	Operations []Operation `json:"operations"`
	CreatedAt  time.Time   `json:"created_at"`
}

// Worker is a registered worker as the server shows it.
type Worker struct {
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	Pools         []string    `json:"pools"`
	Version       string      `json:"version"`
	Capabilities  []string    `json:"capabilities"`
	Capacity      int         `json:"capacity"`
	Running       int         `json:"running"`
	Healthy       bool        `json:"healthy"`
	HealthMessage string      `json:"health_message,omitempty"`
	State         WorkerState `json:"state"`
	Checks        []Check     `json:"checks,omitempty"`
	LastCheck     time.Time   `json:"last_check,omitzero"` // when the worker last ran its checks
	Draining      bool        `json:"draining"`
	LastHeartbeat time.Time   `json:"last_heartbeat"`
	// DrainRequested is set by an admin (POST /api/v1/workers/{id}/drain); Draining is what the worker reports.
	DrainRequested bool      `json:"drain_requested,omitempty"`
	RegisteredAt   time.Time `json:"registered_at"`
	// Profiles are the pod profiles the worker offers; AllowOverrides what a step may override.
	Profiles       []string        `json:"profiles,omitempty"`
	AllowOverrides *OverridePolicy `json:"allow_overrides,omitempty"`
}

// ---- worker requests ----

// RegisterRequest registers a worker with a registration token (sent as the bearer token).
type RegisterRequest struct {
	Name         string   `json:"name"`
	Pools        []string `json:"pools"` // must be within the registration token's pools
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities"`
	Capacity     int      `json:"capacity"`
	// Profiles and AllowOverrides: see Worker.
	Profiles       []string        `json:"profiles,omitempty"`
	AllowOverrides *OverridePolicy `json:"allow_overrides,omitempty"`
}

// RegisterResponse carries the worker's identity. WorkerToken authenticates every later worker call.
type RegisterResponse struct {
	WorkerID    string   `json:"worker_id"`
	WorkerToken string   `json:"worker_token"`
	Pools       []string `json:"pools"`
	// HeartbeatSeconds is how often the worker should heartbeat; LeaseTTLSeconds how long a lease lives
	// without one.
	HeartbeatSeconds int `json:"heartbeat_seconds"`
	LeaseTTLSeconds  int `json:"lease_ttl_seconds"`
}

// LeaseRequest long-polls for one operation.
type LeaseRequest struct {
	WaitSeconds int `json:"wait_seconds"` // at most 30
	// RequestID makes a retried lease call safe: when the worker already holds a lease granted for this id
	// (the reply was lost on the way), the server returns that same lease instead of handing out another
	// operation. Use a fresh random id per logical call and the same id for its retries.
	RequestID string `json:"request_id,omitempty"`
	// LogLimit is the most log the server keeps of each operation this poll leases, in bytes as stored (see
	// DefaultLogLimit); 0 or absent: DefaultLogLimit. The server records it on the operation when it leases
	// it and enforces it on every append, whoever writes.
	LogLimit int64 `json:"log_limit,omitempty"`
}

// Lease is an operation handed to one worker. The operation carries sensitive variable values in clear: the
// worker needs them to run the script. LastSeq is the highest contiguous log sequence the server holds.
type Lease struct {
	LeaseID   string    `json:"lease_id"`
	ExpiresAt time.Time `json:"expires_at"`
	LastSeq   int64     `json:"last_seq"`
	Operation Operation `json:"operation"`
	// PodToken and SealingKey travel once, in the lease that grants the operation (not in the re-adoption
	// listing): the worker puts both in the operation's Secret, so that the script pod can call the server
	// (PROTOCOL.md, "The script pod's channel") and the server can open what it pushes. An older server sends
	// neither: the worker makes its own key and the pod makes no calls.
	PodToken   string `json:"pod_token,omitempty"`
	SealingKey []byte `json:"sealing_key,omitempty"`
}

// LeasesResponse lists the leases a worker holds (used when it restarts and re-adopts its Jobs).
type LeasesResponse struct {
	Leases []Lease `json:"leases"`
}

// StatusRequest reports progress of a leased operation (state "running").
type StatusRequest struct {
	LeaseID string `json:"lease_id"`
	State   State  `json:"state"`
	Message string `json:"message,omitempty"`
}

// AppendLogsRequest appends a batch of lines to a leased operation's log.
type AppendLogsRequest struct {
	LeaseID string    `json:"lease_id"`
	Lines   []LogLine `json:"lines"`
}

// AppendLogsResponse says how far the stored log is contiguous. Gap is true when the server holds lines
// beyond LastSeq, so LastSeq+1 is missing and must be re-sent.
type AppendLogsResponse struct {
	LastSeq int64 `json:"last_seq"`
	Gap     bool  `json:"gap,omitempty"`
	// PodEnd is the end-of-stream marker the script pod pushed, in the reply to an empty batch (the form that
	// asks): a worker whose pod log lost the marker learns it here.
	PodEnd *PodEnd `json:"pod_end,omitempty"`
	// Stored and StoredBytes say how many lines of the batch (and bytes of their text) the store kept, the
	// repeats it dropped not counted: the server's metrics read them. Never on the wire.
	Stored      int   `json:"-"`
	StoredBytes int64 `json:"-"`
}

// ResultRequest ends a leased operation.
type ResultRequest struct {
	LeaseID  string `json:"lease_id"`
	State    State  `json:"state"` // succeeded, failed, cancelled, timed-out
	ExitCode *int   `json:"exit_code,omitempty"`
	Message  string `json:"message,omitempty"`
	LastSeq  int64  `json:"last_seq"`        // the worker's count of lines; the server refuses a result with missing lines
	Usage    *Usage `json:"usage,omitempty"` // what the script consumed, when its runner measured it
}

// Health is a worker's own view of its health: OK is false when any check fails, Message says why (the
// failing checks, or another reason such as a refused upgrade), Checks lists each check of the last round and
// CheckedAt says when that round ran.
type Health struct {
	OK        bool      `json:"ok"`
	Message   string    `json:"message,omitempty"`
	Checks    []Check   `json:"checks,omitempty"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// Check is one health check a worker ran: its name (CheckKubernetesAPI, ...), whether it passed and, when it
// did not, what is wrong and what to do.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
}

// The checks a worker runs (HeartbeatRequest.Health.Checks).
const (
	CheckKubernetesAPI      = "kubernetes-api"       // the API server answers /readyz
	CheckInformers          = "informers"            // synced, and no watch error lately
	CheckPermissions        = "permissions"          // SelfSubjectAccessReview of every verb the agent uses
	CheckScriptPodAdmission = "script-pod-admission" // a server-side dry run of a script Job and its pod
)

// MaxChecks is how many checks a heartbeat may carry.
const MaxChecks = 16

// WorkerState is what the server makes of a worker: its own report, its last heartbeat and its version.
type WorkerState string

const (
	WorkerHealthy     WorkerState = "healthy"     // heartbeats, every check passes, runs the desired version
	WorkerUnhealthy   WorkerState = "unhealthy"   // heartbeats, but a check fails (it gets no work)
	WorkerUnavailable WorkerState = "unavailable" // no heartbeat within three heartbeat intervals (no work)
	WorkerOutdated    WorkerState = "outdated"    // healthy, but runs another version than the desired one
)

// HeartbeatRequest reports a worker's state and renews the leases of its running operations.
type HeartbeatRequest struct {
	Version      string   `json:"version"`
	Capacity     int      `json:"capacity"`
	Capabilities []string `json:"capabilities,omitempty"`
	Running      []string `json:"running"` // operation ids the worker is running
	Health       Health   `json:"health"`
	Draining     bool     `json:"draining"`
	// Profiles and AllowOverrides replace the registered ones (see Worker); absent (null), they are kept (the
	// self-update Job heartbeats without them). The agent always sends both.
	Profiles       []string        `json:"profiles"`
	AllowOverrides *OverridePolicy `json:"allow_overrides"`
}

// HeartbeatResponse tells the worker what the server wants.
type HeartbeatResponse struct {
	DesiredVersion string   `json:"desired_version,omitempty"`
	ChartURL       string   `json:"chart_url,omitempty"`    // where to fetch the chart for DesiredVersion
	ChartSHA256    string   `json:"chart_sha256,omitempty"` // hex digest the worker verifies
	Cancel         []string `json:"cancel,omitempty"`       // operation ids to cancel
	Drain          bool     `json:"drain,omitempty"`
	LeaseTTL       int      `json:"lease_ttl_seconds"`
	// HeartbeatSeconds is the interval the server expects between heartbeats (leases outlive several).
	HeartbeatSeconds int `json:"heartbeat_seconds"`
}
