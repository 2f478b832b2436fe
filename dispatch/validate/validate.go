// Package validate checks requests of the dispatch protocol against its rules and size limits, after they
// decoded: names, images, quantities, paths, sizes. Every error names the field at fault as a JSON path and
// says what to do. The limits are part of the protocol (PROTOCOL.md lists them).
package validate

import (
	"fmt"
	"time"

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
