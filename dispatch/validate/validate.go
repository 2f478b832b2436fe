// Package validate checks requests of the dispatch protocol against its rules and size limits, after they
// decoded: names, images, quantities, paths, sizes. Every error names the field at fault as a JSON path and
// says what to do. The limits are part of the protocol (PROTOCOL.md lists them).
package validate

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/distribution/reference"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Limits.
const (
	// MaxOperationBytes bounds an operation's script + files + variables (api.MaxOperationBytes).
	MaxOperationBytes = api.MaxOperationBytes
	// MaxSteps bounds a deployment's steps.
	MaxSteps = 50
	// MaxLogLines and MaxLogBatchBytes bound one log batch; MaxLineBytes one line's text (the api's limits).
	MaxLogLines      = api.MaxLogLines
	MaxLogBatchBytes = api.MaxLogBatchBytes
	MaxLineBytes     = api.MaxLineBytes
	// MaxWaitSeconds bounds a lease long-poll.
	MaxWaitSeconds = int(api.MaxLeaseWait / time.Second)
	// MaxTimeoutSeconds bounds an operation's timeout (7 days).
	MaxTimeoutSeconds = 7 * 24 * 3600
	// MaxTokenTTLSeconds bounds a registration token's life (1 year); the default is DefaultTokenTTLSeconds.
	MaxTokenTTLSeconds     = 365 * 24 * 3600
	DefaultTokenTTLSeconds = 24 * 3600
	// MaxCapacity bounds the operations one worker runs at once.
	MaxCapacity = 10000
	// MaxNameLen bounds free-text names (operation, deployment, worker); MaxMessageLen messages.
	MaxNameLen    = 200
	MaxMessageLen = api.MaxMessageLen
	// MaxListLen bounds lists of pools, capabilities, files and variables.
	MaxListLen = 1000
	// MaxRunning bounds the running list of a heartbeat.
	MaxRunning = MaxCapacity
)

// Syntaxes are the script languages a worker runs.
var syntaxes = []string{"bash", "sh", "python3", "pwsh"}

// Error is a validation error naming the field at fault. Code is one of the api.Code* constants or empty.
type Error struct {
	Field   string
	Message string
	Code    string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func fail(field, format string, args ...any) *Error {
	return &Error{Field: field, Message: fmt.Sprintf(format, args...)}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	capability = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	version    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	objectID   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// WorkerID checks a worker id given in a request path. The server makes ids as a prefix and hex digits
// (wkr-0123456789abcdef); anything else cannot name a worker and is refused before it reaches the store or
// the log.
func WorkerID(field, id string) error {
	if !objectID.MatchString(id) {
		return fail(field, "not a worker id: a worker id is at most 128 letters, digits, '.', '_' and '-', such as wkr-0123456789abcdef; `octo-worker workers list` shows them")
	}
	return nil
}

// PoolName checks a pool name: a DNS label, because it ends up in Kubernetes labels.
func PoolName(field, name string) error {
	if name == "" {
		return fail(field, "required: name a pool")
	}
	if len(name) > 63 || !dnsLabel.MatchString(name) {
		return fail(field, "%q is not a valid pool name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

func poolList(field string, pools []string, required bool) error {
	if len(pools) == 0 {
		if required {
			return fail(field, "required: name at least one pool")
		}
		return nil
	}
	if len(pools) > MaxListLen {
		return fail(field, "%d pools; at most %d", len(pools), MaxListLen)
	}
	seen := map[string]bool{}
	for i, p := range pools {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := PoolName(f, p); err != nil {
			return err
		}
		if seen[p] {
			return fail(f, "pool %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// Capabilities checks a list of capability names.
func Capabilities(field string, caps []string) error {
	if len(caps) > MaxListLen {
		return fail(field, "%d capabilities; at most %d", len(caps), MaxListLen)
	}
	seen := map[string]bool{}
	for i, c := range caps {
		f := fmt.Sprintf("%s[%d]", field, i)
		if len(c) > 63 || !capability.MatchString(c) {
			return fail(f, "%q is not a valid capability: use lower-case letters, digits, '-' and '.' (e.g. kubernetes-job)", c)
		}
		if seen[c] {
			return fail(f, "capability %q is listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

func text(field, s string, max int) error {
	if len(s) > max {
		return fail(field, "%d bytes; at most %d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return fail(field, "not valid UTF-8")
	}
	return nil
}

// CreatePool checks a pool creation.
func CreatePool(r *api.CreatePoolRequest) error {
	if err := PoolName("name", r.Name); err != nil {
		return err
	}
	return text("description", r.Description, MaxMessageLen)
}

// CreateToken checks a registration token request.
func CreateToken(r *api.CreateTokenRequest) error {
	if err := poolList("pools", r.Pools, true); err != nil {
		return err
	}
	if r.TTLSeconds < 0 || r.TTLSeconds > MaxTokenTTLSeconds {
		return fail("ttl_seconds", "%d is out of range: use 1..%d (0 means the default, 24 h)", r.TTLSeconds, MaxTokenTTLSeconds)
	}
	return nil
}

// OperationSpec checks one operation (prefix is its path in the request, "" or "steps[2]"). An empty pool
// is accepted when poolOptional is set (a deployment step inherits the deployment's pool).
func OperationSpec(prefix string, s *api.OperationSpec, poolOptional bool) error {
	if err := text(join(prefix, "name"), s.Name, MaxNameLen); err != nil {
		return err
	}
	if s.Pool != "" || !poolOptional {
		if err := PoolName(join(prefix, "pool"), s.Pool); err != nil {
			return err
		}
	}
	if strings.TrimSpace(s.Script) == "" {
		return fail(join(prefix, "script"), "required: give the script to run")
	}
	if !utf8.ValidString(s.Script) {
		return fail(join(prefix, "script"), "not valid UTF-8")
	}
	if s.Syntax != "" && !contains(syntaxes, s.Syntax) {
		return fail(join(prefix, "syntax"), "%q is not supported: use one of %s (default bash)", s.Syntax, strings.Join(syntaxes, ", "))
	}
	if err := files(join(prefix, "files"), s.Files); err != nil {
		return err
	}
	if err := variables(join(prefix, "variables"), s.Variables); err != nil {
		return err
	}
	if s.Image != "" {
		if _, err := reference.ParseNormalizedNamed(s.Image); err != nil {
			return fail(join(prefix, "image"), "%q is not a valid image reference (%v): use e.g. alpine:3.20 or registry.example.com/team/tools@sha256:...", s.Image, err)
		}
	}
	if s.Requests != nil {
		if err := quantity(join(prefix, "requests.cpu"), s.Requests.CPU, "250m or 1"); err != nil {
			return err
		}
		if err := quantity(join(prefix, "requests.memory"), s.Requests.Memory, "512Mi or 1Gi"); err != nil {
			return err
		}
	}
	if s.TimeoutSeconds < 0 || s.TimeoutSeconds > MaxTimeoutSeconds {
		return fail(join(prefix, "timeout_seconds"), "%d is out of range: use 1..%d (0 means the worker's default)", s.TimeoutSeconds, MaxTimeoutSeconds)
	}
	if err := Capabilities(join(prefix, "capabilities"), s.Capabilities); err != nil {
		return err
	}
	return size(prefix, s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func quantity(field, q, example string) error {
	if q == "" {
		return nil
	}
	v, err := resource.ParseQuantity(q)
	if err != nil {
		return fail(field, "%q is not a Kubernetes quantity: use e.g. %s", q, example)
	}
	if v.Sign() <= 0 {
		return fail(field, "%q must be more than zero", q)
	}
	return nil
}

func files(field string, fs []api.File) error {
	if len(fs) > MaxListLen {
		return fail(field, "%d files; at most %d", len(fs), MaxListLen)
	}
	seen := map[string]bool{}
	for i, f := range fs {
		pf := fmt.Sprintf("%s[%d].path", field, i)
		switch {
		case f.Path == "":
			return fail(pf, "required: a relative path such as config/app.json")
		case len(f.Path) > 1024 || !utf8.ValidString(f.Path) || strings.ContainsAny(f.Path, "\x00\\"):
			return fail(pf, "%q is not a usable path: at most 1024 bytes of UTF-8, '/' as the separator", f.Path)
		case strings.HasPrefix(f.Path, "/"):
			return fail(pf, "%q is absolute: give a path relative to the script's working directory", f.Path)
		case path.Clean(f.Path) != f.Path || f.Path == "." || f.Path == ".." || strings.HasPrefix(f.Path, "../"):
			return fail(pf, "%q is not a clean relative path (no '..', '.', '//' or trailing '/'): write it as %q", f.Path, path.Clean(f.Path))
		}
		if seen[f.Path] {
			return fail(pf, "%q is given twice", f.Path)
		}
		seen[f.Path] = true
		if f.Mode > 0o777 {
			return fail(fmt.Sprintf("%s[%d].mode", field, i), "%#o is not a permission mode: use 0..0777 (e.g. 420 for 0644)", f.Mode)
		}
	}
	return nil
}

func variables(field string, vs []api.Variable) error {
	if len(vs) > MaxListLen {
		return fail(field, "%d variables; at most %d", len(vs), MaxListLen)
	}
	seen := map[string]bool{}
	for i, v := range vs {
		nf := fmt.Sprintf("%s[%d].name", field, i)
		if v.Name == "" {
			return fail(nf, "required: an environment variable name")
		}
		if len(v.Name) > 256 || !envName.MatchString(v.Name) {
			return fail(nf, "%q is not an environment variable name: use letters, digits and '_', not starting with a digit", v.Name)
		}
		if seen[v.Name] {
			return fail(nf, "%q is given twice", v.Name)
		}
		seen[v.Name] = true
		if !utf8.ValidString(v.Value) || strings.ContainsRune(v.Value, 0) {
			return fail(fmt.Sprintf("%s[%d].value", field, i), "must be UTF-8 without NUL bytes (it becomes an environment variable)")
		}
	}
	return nil
}

// size enforces MaxOperationBytes, naming the largest part so the user knows what to move.
func size(prefix string, s *api.OperationSpec) error {
	total := len(s.Script)
	biggest, biggestField := len(s.Script), join(prefix, "script")
	for i, f := range s.Files {
		n := len(f.Path) + len(f.Content)
		total += n
		if n > biggest {
			biggest, biggestField = n, fmt.Sprintf("%s[%d].content", join(prefix, "files"), i)
		}
	}
	for i, v := range s.Variables {
		n := len(v.Name) + len(v.Value)
		total += n
		if n > biggest {
			biggest, biggestField = n, fmt.Sprintf("%s[%d].value", join(prefix, "variables"), i)
		}
	}
	if total > MaxOperationBytes {
		return &Error{Field: biggestField, Code: api.CodeTooLarge, Message: fmt.Sprintf(
			"the operation's script, files and variables add up to %d KiB (the largest part, here, is %d KiB); at most %d KiB fit, "+
				"because the worker ships them in one Kubernetes Secret (1 MiB): put large files in the step's image or fetch them in the script",
			ceilKiB(total), ceilKiB(biggest), MaxOperationBytes>>10)}
	}
	return nil
}

func ceilKiB(n int) int { return (n + 1023) / 1024 }

// DeploymentSpec checks a deployment. Steps without a pool need the deployment's pool.
func DeploymentSpec(d *api.DeploymentSpec) error {
	if strings.TrimSpace(d.Name) == "" {
		return fail("name", "required: name the deployment")
	}
	if err := text("name", d.Name, MaxNameLen); err != nil {
		return err
	}
	if d.Pool != "" {
		if err := PoolName("pool", d.Pool); err != nil {
			return err
		}
	}
	if len(d.Steps) == 0 {
		return fail("steps", "required: a deployment needs at least one step")
	}
	if len(d.Steps) > MaxSteps {
		return fail("steps", "%d steps; at most %d", len(d.Steps), MaxSteps)
	}
	for i := range d.Steps {
		prefix := fmt.Sprintf("steps[%d]", i)
		if d.Steps[i].Pool == "" && d.Pool == "" {
			return fail(prefix+".pool", "required: give the step a pool, or the deployment a default pool")
		}
		if err := OperationSpec(prefix, &d.Steps[i], true); err != nil {
			return err
		}
	}
	return nil
}

// Register checks a worker registration.
func Register(r *api.RegisterRequest) error {
	if strings.TrimSpace(r.Name) == "" {
		return fail("name", "required: the worker's name (e.g. its pod or release name)")
	}
	if err := text("name", r.Name, MaxNameLen); err != nil {
		return err
	}
	if err := poolList("pools", r.Pools, false); err != nil {
		return err
	}
	if err := Version("version", r.Version); err != nil {
		return err
	}
	if err := Capabilities("capabilities", r.Capabilities); err != nil {
		return err
	}
	if r.Capacity < 1 || r.Capacity > MaxCapacity {
		return fail("capacity", "%d is out of range: the operations the worker runs at once, 1..%d", r.Capacity, MaxCapacity)
	}
	return nil
}

// Version checks a worker or chart version string.
func Version(field, v string) error {
	if v == "" {
		return fail(field, "required: a version such as 1.4.2")
	}
	if !version.MatchString(v) {
		return fail(field, "%q is not a version: at most 64 letters, digits, '.', '_', '+' and '-'", v)
	}
	return nil
}

// Lease checks a lease long-poll.
func Lease(r *api.LeaseRequest) error {
	if r.WaitSeconds < 0 || r.WaitSeconds > MaxWaitSeconds {
		return fail("wait_seconds", "%d is out of range: wait 0..%d seconds", r.WaitSeconds, MaxWaitSeconds)
	}
	if len(r.RequestID) > 128 {
		return fail("request_id", "%d bytes; at most 128", len(r.RequestID))
	}
	return nil
}

func leaseID(id string) error {
	if id == "" {
		return fail("lease_id", "required: the lease id from the lease reply")
	}
	if len(id) > 128 {
		return fail("lease_id", "%d bytes; at most 128", len(id))
	}
	return nil
}

// Status checks a status report.
func Status(r *api.StatusRequest) error {
	if err := leaseID(r.LeaseID); err != nil {
		return err
	}
	if r.State != api.StateRunning {
		return fail("state", "%q: a status report sets state running; report the end with a result", r.State)
	}
	return text("message", r.Message, MaxMessageLen)
}

// AppendLogs checks a log batch.
func AppendLogs(r *api.AppendLogsRequest) error {
	if err := leaseID(r.LeaseID); err != nil {
		return err
	}
	if len(r.Lines) > MaxLogLines {
		return &Error{Field: "lines", Code: api.CodeTooLarge, Message: fmt.Sprintf("%d lines; send at most %d per batch", len(r.Lines), MaxLogLines)}
	}
	total := 0
	for i, l := range r.Lines {
		if l.Seq >= 0 && l.Pos == 0 && (l.Stream == api.StreamStdout || l.Stream == api.StreamStderr || l.Stream == api.StreamSystem) && len(l.Text) <= MaxLineBytes {
			total += len(l.Text)
			continue // a valid line: no field name to format (batches have thousands)
		}
		f := fmt.Sprintf("lines[%d]", i)
		if l.Seq < 0 {
			return fail(f+".seq", "%d is negative: runner lines count from 1, the worker's own notes use 0", l.Seq)
		}
		if l.Pos != 0 {
			return fail(f+".pos", "set by the server; leave it out")
		}
		switch l.Stream {
		case api.StreamStdout, api.StreamStderr, api.StreamSystem:
		case "":
			return fail(f+".stream", "required: stdout, stderr or system")
		default:
			return fail(f+".stream", "%q: use stdout, stderr or system", l.Stream)
		}
		if len(l.Text) > MaxLineBytes {
			return &Error{Field: f + ".text", Code: api.CodeTooLarge, Message: fmt.Sprintf("%d bytes; a line holds at most %d KiB: split it", len(l.Text), MaxLineBytes>>10)}
		}
		total += len(l.Text)
	}
	if total > MaxLogBatchBytes {
		return &Error{Field: "lines", Code: api.CodeTooLarge, Message: fmt.Sprintf("the batch holds %d KiB of text; at most %d MiB: send smaller batches", ceilKiB(total), MaxLogBatchBytes>>20)}
	}
	return nil
}

// Result checks a result. Succeeded needs exit code 0; lost is the server's to set.
func Result(r *api.ResultRequest) error {
	if err := leaseID(r.LeaseID); err != nil {
		return err
	}
	switch r.State {
	case api.StateSucceeded:
		if r.ExitCode == nil {
			return fail("exit_code", "required with state succeeded (it must be 0)")
		}
		if *r.ExitCode != 0 {
			return fail("exit_code", "%d with state succeeded: an operation succeeds only with exit code 0; report state failed", *r.ExitCode)
		}
	case api.StateFailed, api.StateCancelled, api.StateTimedOut:
	case "":
		return fail("state", "required: succeeded, failed, cancelled or timed-out")
	default:
		return fail("state", "%q: a result is succeeded, failed, cancelled or timed-out", r.State)
	}
	if r.LastSeq < 0 {
		return fail("last_seq", "%d is negative: the number of runner lines sent", r.LastSeq)
	}
	return text("message", r.Message, MaxMessageLen)
}

// Heartbeat checks a heartbeat.
func Heartbeat(r *api.HeartbeatRequest) error {
	if err := Version("version", r.Version); err != nil {
		return err
	}
	if r.Capacity < 0 || r.Capacity > MaxCapacity {
		return fail("capacity", "%d is out of range: 0..%d", r.Capacity, MaxCapacity)
	}
	if err := Capabilities("capabilities", r.Capabilities); err != nil {
		return err
	}
	if len(r.Running) > MaxRunning {
		return fail("running", "%d operations; at most %d", len(r.Running), MaxRunning)
	}
	for i, id := range r.Running {
		if id == "" || len(id) > 128 {
			return fail(fmt.Sprintf("running[%d]", i), "not an operation id")
		}
	}
	return text("health.message", r.Health.Message, MaxMessageLen)
}

// DesiredVersion checks a desired-version request.
func DesiredVersion(r *api.DesiredVersion) error {
	if err := Version("version", r.Version); err != nil {
		return err
	}
	if r.ChartURL != "" || r.ChartSHA256 != "" {
		return fail("chart_url", "set by the server from the uploaded chart; leave chart_url and chart_sha256 out")
	}
	return nil
}
