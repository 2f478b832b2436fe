package jobrunner

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// finish delivers the remaining lines and reports the result.
func (o *operation) finish(ctx context.Context, out *outcome) {
	if o.finished {
		return
	}
	o.finished = true
	if out.State != api.StateSucceeded && out.State != api.StateCancelled && out.Message != "" {
		o.say(ctx, "%s", out.Message)
	}
	if out.DeleteJob {
		o.deleteJob(ctx)
	}
	stored, err := o.ship.Flush(ctx)
	if err == nil && o.fol != nil && stored < o.fol.delivered {
		// The server lost lines it had acknowledged (restored from an older state): read them again.
		o.log.WithFields(logrus.Fields{"stored": stored, "delivered": o.fol.delivered}).Warn("server holds fewer lines than delivered; re-reading the pod log")
		err = o.redeliver(ctx, stored)
	}
	if err != nil {
		o.log.WithError(err).Error("delivering the operation's log")
	}
	lastSeq := o.lease.LastSeq
	if o.fol != nil {
		lastSeq = max(lastSeq, o.fol.delivered)
	}
	req := api.ResultRequest{LeaseID: o.lease.LeaseID, State: out.State, ExitCode: out.ExitCode, Message: out.Message, LastSeq: lastSeq, Usage: out.Usage}
	backoff := 200 * time.Millisecond
	rereads := 0
	for {
		_, err := o.deps.d.Result(ctx, o.id, req)
		if held, ok := api.MissingLines(err); ok && o.fol != nil && o.fol.lost != "" {
			// Lines are lost for good (follow.go said which): the operation fails, saying so, rather than
			// waiting for lines nobody can deliver.
			req.State, req.LastSeq, req.Message = api.StateFailed, held, o.fol.lost+"; "+out.Message
			o.fol.lost = ""
			continue
		}
		if held, ok := api.MissingLines(err); ok && rereads < 3 && o.fol != nil {
			// The server lacks lines it once acknowledged (or never got): read them from the pod again.
			rereads++
			o.log.WithFields(logrus.Fields{"server_holds": held, "last_seq": lastSeq}).Warn("result refused for missing lines; re-reading the pod log")
			o.fol.gapRead()
			if ferr := o.redeliver(ctx, held); ferr != nil {
				o.log.WithError(ferr).Error("delivering re-read lines")
			}
			continue
		}
		if err == nil {
			o.deps.metrics.operationFinished(string(out.State))
			fields := logrus.Fields{"state": out.State, "lines": lastSeq}
			if out.ExitCode != nil {
				fields["exit_code"] = *out.ExitCode // none when cancelled before the end, or when the result is unknown
			}
			o.log.WithFields(fields).Info("operation finished")
			return
		}
		if ctx.Err() != nil {
			return
		}
		if permanent(err) {
			o.log.WithError(err).Error("dispatch server refused the result")
			return
		}
		o.log.WithError(err).Warn("reporting result failed; retrying")
		if !backOff(ctx, &backoff, 10*time.Second) {
			return
		}
	}
}

// redeliver reads the pod's log again and ships the lines after held, the most the server holds; it returns
// the shipper's error.
func (o *operation) redeliver(ctx context.Context, held int64) error {
	if err := o.fol.rereadFrom(ctx, held, func(l api.LogLine) error { return o.ship.Add(ctx, l) }); err != nil {
		o.log.WithError(err).Warn("re-reading pod log")
	}
	_, err := o.ship.Flush(ctx)
	return err
}
