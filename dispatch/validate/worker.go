package validate

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Register checks a worker registration.
func Register(r *api.RegisterRequest) error {
	if strings.TrimSpace(r.Name) == "" {
		return fail("name", "required: the worker's name (e.g. its pod or release name)")
	}
	if err := name("name", r.Name, MaxNameLen); err != nil {
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
	if err := profiles("profiles", r.Profiles); err != nil {
		return err
	}
	if err := Policy("allow_overrides", r.AllowOverrides); err != nil {
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
	if r.LogLimit != 0 && (r.LogLimit < api.MinLogLimit || r.LogLimit > api.MaxLogLimit) {
		return fail("log_limit", "%d bytes is out of range: give %d..%d bytes, or 0 for the server's default (%d)",
			r.LogLimit, api.MinLogLimit, api.MaxLogLimit, api.DefaultLogLimit)
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
		if l.Seq >= 0 && l.Pos == 0 && (l.Stream == api.StreamStdout || l.Stream == api.StreamStderr || l.Stream == api.StreamSystem) && len(l.Text) <= MaxLineBytes &&
			logTime(l.Time) {
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
		if !logTime(l.Time) {
			return fail(f+".time", "%s is out of range: a log time lies between %s and %s (leave it out for the server's time)",
				l.Time.Format(time.RFC3339Nano), api.MinLogTime.Format(time.DateOnly), api.MaxLogTime.Format(time.DateOnly))
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

// logTime reports whether t is a log line's time the store keeps unchanged (the zero time: none given).
func logTime(t time.Time) bool {
	return t.IsZero() || (!t.Before(api.MinLogTime) && !t.After(api.MaxLogTime))
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
		if r.ExitCode != nil && (*r.ExitCode < 0 || *r.ExitCode > api.MaxExitCode) {
			return fail("exit_code", "%d is not a process exit code: use 0..255 (a signal is 128+n), or leave it out when the script did not run", *r.ExitCode)
		}
	case "":
		return fail("state", "required: succeeded, failed, cancelled or timed-out")
	default:
		return fail("state", "%q: a result is succeeded, failed, cancelled or timed-out", r.State)
	}
	if r.Usage != nil {
		if err := Usage(r.Usage); err != nil {
			return err
		}
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
	if err := profiles("profiles", r.Profiles); err != nil {
		return err
	}
	if err := Policy("allow_overrides", r.AllowOverrides); err != nil {
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
	if err := text("health.message", r.Health.Message, MaxMessageLen); err != nil {
		return err
	}
	return checks(r.Health.Checks)
}

// checks checks a heartbeat's health checks: at most api.MaxChecks, each named (printable, no control
// characters: admins read them in a terminal) with a bounded message.
func checks(cs []api.Check) error {
	if len(cs) > api.MaxChecks {
		return fail("health.checks", "%d checks; at most %d", len(cs), api.MaxChecks)
	}
	for i, c := range cs {
		f := fmt.Sprintf("health.checks[%d]", i)
		if c.Name == "" {
			return fail(f+".name", "required: the check's name, such as %q", api.CheckKubernetesAPI)
		}
		if err := text(f+".name", c.Name, MaxNameLen); err != nil {
			return err
		}
		if strings.IndexFunc(c.Name, unicode.IsControl) >= 0 {
			return fail(f+".name", "%q holds control characters; name checks with printable text", c.Name)
		}
		if err := text(f+".message", c.Message, MaxMessageLen); err != nil {
			return err
		}
	}
	return nil
}

// Usage refuses a usage no runner measures. The worker checks the runner's report too: a script can forge its
// runner's records, whose key is in its pod.
func Usage(u *api.Usage) error {
	switch {
	case u.PeakMemoryBytes < 0 || u.PeakMemoryBytes > api.MaxUsageMemoryBytes:
		return fail("usage.peak_memory_bytes", "%d is outside 0..%d", u.PeakMemoryBytes, int64(api.MaxUsageMemoryBytes))
	case !(u.CPUSeconds >= 0 && u.CPUSeconds <= api.MaxUsageCPUSeconds): // NaN fails too
		return fail("usage.cpu_seconds", "%v is outside 0..%g", u.CPUSeconds, float64(api.MaxUsageCPUSeconds))
	case u.Source != api.UsageCgroup && u.Source != api.UsageRusage:
		return fail("usage.source", "%q: use %q or %q", u.Source, api.UsageCgroup, api.UsageRusage)
	}
	return nil
}
