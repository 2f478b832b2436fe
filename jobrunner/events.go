package jobrunner

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// This file routes Kubernetes events about an operation's Job and pods to the operation, and decides which
// of them earn a line in its log. Events are advisory: outcomes come from Job and pod status (judge.go).

// onEvent routes a pod or Job event to the operation it is about.
func (a *Agent) onEvent(obj any) {
	ev, ok := obj.(*corev1.Event)
	if !ok {
		return
	}
	var annotations map[string]string
	switch ev.InvolvedObject.Kind {
	case "Pod":
		p, err := a.pods.Pods(a.cfg.Namespace).Get(ev.InvolvedObject.Name)
		if err != nil {
			return
		}
		annotations = p.Annotations
	case "Job":
		j, err := a.jobs.Jobs(a.cfg.Namespace).Get(ev.InvolvedObject.Name)
		if err != nil {
			return
		}
		annotations = j.Annotations
	default:
		return
	}
	a.mu.Lock()
	op := a.ops[annotations[AnnotationOperation]]
	a.mu.Unlock()
	if op != nil {
		op.onEventAsync(ev.DeepCopy())
	}
}

// onEventAsync hands an event to the run goroutine; a burst beyond the buffer is dropped (events are advisory:
// outcomes come from Job and pod status).
func (o *operation) onEventAsync(ev *corev1.Event) {
	select {
	case o.evCh <- ev:
	default:
		o.log.WithField("reason", ev.Reason).Debug("event buffer full; event not written to the log")
	}
}

// onEvent writes a relevant Kubernetes event about the operation's Job or pod into its log.
func (o *operation) onEvent(ctx context.Context, ev *corev1.Event) {
	if line := eventLine(ev, o.startedAt, o.events); line != "" {
		o.say(ctx, "%s", line)
	}
}

// eventLine returns the line an event adds to an operation's log, or "" for none: the event happened before
// since (it was written before a restart, or is stale), it was written already (seen holds, per event, the
// count last handled; a repeated event counts up), or it is not relevant. It records the event in seen.
func eventLine(ev *corev1.Event, since time.Time, seen map[types.UID]int32) string {
	when := ev.LastTimestamp.Time
	if when.IsZero() {
		when = ev.EventTime.Time
	}
	if !when.IsZero() && when.Before(since) {
		return ""
	}
	count := max(ev.Count, 1)
	if seen[ev.UID] >= count {
		return ""
	}
	seen[ev.UID] = count
	if !relevantEvent(ev) {
		return ""
	}
	return fmt.Sprintf("%s %s: %s (%s)", strings.ToLower(ev.InvolvedObject.Kind), ev.Reason, strings.TrimSpace(ev.Message), ev.Type)
}

// relevantEvent filters events worth a line in an operation's log. FailedScheduling is left out: the pending
// report carries the scheduler's message already.
func relevantEvent(ev *corev1.Event) bool {
	switch ev.Reason {
	case "FailedScheduling", "BackOff", "Failed":
		return false // reported from the pod's own status, with the image and the outcome
	case "Scheduled", "TriggeredScaleUp", "NotTriggerScaleUp", "Preempted", "Evicted", "Killing", "OOMKilling", "FailedCreate", "FailedMount":
		return true
	}
	return ev.Type == corev1.EventTypeWarning
}
