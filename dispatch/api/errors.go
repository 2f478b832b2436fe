package api

import (
	"errors"
	"fmt"
	"net/http"
)

// StatusError is a refusal of the dispatch server: a non-2xx reply and its Error body. The client returns it,
// and callers learn what it means from the functions below, without knowing the client.
type StatusError struct {
	Status int
	Body   Error
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Body.Error)
	if e.Body.Field != "" {
		msg += " (field " + e.Body.Field + ")"
	}
	return msg
}

// AsStatusError returns the refusal in err's chain.
func AsStatusError(err error) (*StatusError, bool) {
	var e *StatusError
	ok := errors.As(err, &e)
	return e, ok
}

// IsLeaseLost reports that the worker's lease has ended: stop the operation and forget it.
func IsLeaseLost(err error) bool {
	e, ok := AsStatusError(err)
	return ok && e.Body.Code == CodeLeaseLost
}

// IsNotLeased reports that the operation is not leased to this worker.
func IsNotLeased(err error) bool {
	e, ok := AsStatusError(err)
	return ok && e.Body.Code == CodeNotLeased
}

// MissingLines reports a result refused because the server lacks lines; lastSeq is what it holds.
func MissingLines(err error) (lastSeq int64, ok bool) {
	e, isErr := AsStatusError(err)
	if !isErr || e.Body.Code != CodeMissingLines {
		return 0, false
	}
	return e.Body.LastSeq, true
}

// Permanent reports a refusal that retrying cannot change (the lease is gone, the request is invalid), as
// opposed to the server being unreachable or overloaded (those are not StatusErrors, or are 408 and 429).
func Permanent(err error) bool {
	e, ok := AsStatusError(err)
	return ok && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}
