package postgres

// pg-logs' methods are written (logs.go, loglimit.go, pod.go, packages.go, retention.go, stats.go, usage.go);
// what is left here is the error todo_core.go's stubs return. pg-logs deletes this file once todo_core.go is
// gone.

import "errors"

var errNotYet = errors.New("not implemented yet in the PostgreSQL driver")
