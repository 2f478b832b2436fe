package validate

import (
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// maxPodRecord bounds one pushed record: a sealed logline.MaxPayload in base64 with its seq, time and stream
// takes about 11 KiB.
const maxPodRecord = 16 << 10

// PodLogs checks a push of sealed records from a script pod (what they hold is checked once opened).
func PodLogs(r *api.PodLogsRequest) error {
	if len(r.Records) > MaxLogLines+1 { // a batch of lines and the end-of-stream marker
		return &Error{Field: "records", Code: api.CodeTooLarge, Message: fmt.Sprintf("%d records; push at most %d at once", len(r.Records), MaxLogLines)}
	}
	total := 0
	for i, rec := range r.Records {
		if len(rec) > maxPodRecord {
			return &Error{Field: fmt.Sprintf("records[%d]", i), Code: api.CodeTooLarge, Message: fmt.Sprintf("%d bytes; a runner record takes at most %d KiB", len(rec), maxPodRecord>>10)}
		}
		total += len(rec)
	}
	if total > api.MaxPodPushBytes {
		return &Error{Field: "records", Code: api.CodeTooLarge, Message: fmt.Sprintf("%d KiB of records; push at most %d MiB at once", ceilKiB(total), api.MaxPodPushBytes>>20)}
	}
	return nil
}
