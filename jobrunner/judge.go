package jobrunner

import (
	"fmt"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// This file is the judge: what an operation's Job, pods and the clock mean for it. judge is a pure function of
// plain inputs (no client, no logging, no goroutines); operation.evaluate gathers the observation and performs
// the verdict's effects (start a follower, write lines, ask the API server, report the outcome).

// capacityReportEvery is how often a pod that keeps waiting for capacity is reported again in its log.
const capacityReportEvery = time.Minute

// jobAppearWithin is how long a Job just created may be missing from the informer before the API server is
// asked directly whether it exists; jobRecheck is how often to look again meanwhile.
const (
	jobAppearWithin = 30 * time.Second
	jobRecheck      = 5 * time.Second
)

// idle is when to judge again when nothing but a change of the Job or pod can end the wait.
const idle = time.Hour

// outcome is how an operation ended.
type outcome struct {
	State     api.State
	ExitCode  *int
	Usage     *api.Usage // what the script consumed, from the end-of-stream marker (nil: not measured, or unreadable)
	Message   string
	DeleteJob bool // the worker ends the Job itself (cancel, no capacity, bad image)
}

// limits are the configured tolerances of the judge.
type limits struct {
	PendingTimeout time.Duration // how long a pod may wait for capacity (scriptPods.pendingTimeout)
	ImagePullGrace time.Duration // how long a container may fail to start (scriptPods.imagePullGrace)
}

// memory is what the judge remembers between two looks at an operation. judge never changes the memory it is
// given; it returns the next one in its verdict.
type memory struct {
	JobSeen      bool                 // the informer has shown the Job at least once
	PendingSince time.Time            // when the current pod was first seen unschedulable (zero: it is not)
	WaitingMsg   string               // the scheduler's message last written to the log
	WaitingSaid  time.Time            // when it was written
	ProblemSince map[string]time.Time // container → when its current start problem was first seen
	ProblemSaid  map[string]string    // container → the start problem (reason) last written to the log
}

func (m memory) clone() memory {
	c := m
	c.ProblemSince = make(map[string]time.Time, len(m.ProblemSince))
	for k, v := range m.ProblemSince {
		c.ProblemSince[k] = v
	}
	c.ProblemSaid = make(map[string]string, len(m.ProblemSaid))
	for k, v := range m.ProblemSaid {
		c.ProblemSaid[k] = v
	}
	return c
}

// observation is what the worker knows of an operation when it judges it.
type observation struct {
	Job       string       // "namespace/name" of the operation's Job, for messages
	JobObject *batchv1.Job // as the informer holds it; nil: absent (or another operation's)
	// JobGone: the API server, asked directly (verdict.CheckJob), does not know the Job either.
	JobGone     bool
	Pods        []*corev1.Pod // the operation's pods, in any order (a Job with retries has several)
	StartedAt   time.Time     // when supervision began
	Cancelling  bool          // a cancel was requested and this worker is deleting the Job
	Following   bool          // a follower is reading a pod's log now
	FollowedPod string        // the pod the last follower read ("": none yet)
	EOS         *logline.Line // the end-of-stream marker that follower read, if any
	Memory      memory
	// Adopted: supervision began without creating the Job, because it had been created before (a running
	// operation re-adopted after a restart) or because a cancel was requested. A missing Job is then not one
	// the informer has yet to deliver: once the API server confirms it is gone, the operation has ended.
	Adopted bool
	// CancelRequested: the server asked to cancel the operation (its lease said so, or a heartbeat did), so a
	// Job that is gone was deleted for the cancel, by this worker before it restarted or by someone else.
	CancelRequested bool
}

// verdict is the judge's decision: the outcome, or when to look again, and what to do meanwhile.
type verdict struct {
	Outcome  *outcome      // nil: the operation has not ended
	Next     time.Duration // with no Outcome: judge again after this long if nothing changes
	Follow   string        // start following this pod's log (the previous pod's lines stay counted)
	CheckJob bool          // ask the API server whether the Job exists; if not, judge again with JobGone
	Say      []string      // system lines for the operation's log, in this order, before anything else
	Memory   memory        // what to remember until the next look
}

// judge decides what the observed state of an operation means at now.
func judge(obs observation, now time.Time, lim limits) verdict {
	v := verdict{Next: idle, Memory: obs.Memory.clone()}
	m := &v.Memory
	job := obs.JobObject
	pod := newestPod(obs.Pods)
	eos := obs.EOS

	// A pod whose script container has started is followed, one follower per pod.
	if pod != nil && obs.FollowedPod != pod.Name && !obs.Following {
		if st := containerStatus(pod.Status.ContainerStatuses, ScriptContainerName); st != nil && (st.State.Running != nil || st.State.Terminated != nil) {
			v.Follow = pod.Name
			eos = nil // the new follower has read nothing yet
		}
	}
	following := obs.Following || v.Follow != ""
	end := func(out *outcome) verdict {
		v.Outcome, v.Next = out, 0
		return v
	}

	if obs.Cancelling {
		if following && job != nil {
			return v // the stream ends when the pod stops
		}
		return end(&outcome{State: api.StateCancelled, Message: "cancelled"})
	}
	if job == nil && !m.JobSeen {
		// Just created: the informer has not delivered it yet. Ask the API server directly if that takes long.
		if !obs.Adopted && now.Sub(obs.StartedAt) < jobAppearWithin {
			v.Next = jobRecheck
			return v
		}
		if !obs.JobGone {
			v.Next, v.CheckJob = jobRecheck, true
			return v
		}
	}
	if job == nil {
		switch {
		case following:
			return v
		case obs.CancelRequested:
			return end(logResult(pod, eos, &outcome{State: api.StateCancelled, Message: "cancelled"}))
		case obs.Adopted && !m.JobSeen:
			return end(logResult(pod, eos, &outcome{State: api.StateFailed, Message: fmt.Sprintf("the operation's Job %s no longer exists (the worker was away longer than ttlSecondsAfterFinished, or someone deleted it); its result is unknown", obs.Job)}))
		}
		return end(logResult(pod, eos, &outcome{State: api.StateFailed, Message: fmt.Sprintf("Job %s was deleted by something other than this worker", obs.Job)}))
	}
	m.JobSeen = true
	if c := jobCondition(job, batchv1.JobFailed, batchv1.JobFailureTarget); c != nil && c.Reason == batchv1.JobReasonDeadlineExceeded {
		if following && !podFinished(pod) {
			return v
		}
		return end(logResult(pod, eos, &outcome{State: api.StateTimedOut, Message: fmt.Sprintf("ran longer than its timeout (activeDeadlineSeconds %d); Kubernetes stopped it", deref(job.Spec.ActiveDeadlineSeconds))}))
	}
	complete := jobCondition(job, batchv1.JobComplete, batchv1.JobSuccessCriteriaMet) != nil
	if complete || jobCondition(job, batchv1.JobFailed, batchv1.JobFailureTarget) != nil {
		switch {
		case following:
			return v
		case pod == nil:
			return end(&outcome{State: api.StateFailed, Message: "the Job ended without a pod: " + jobMessage(job)})
		case complete:
			return end(logResult(pod, eos, &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}))
		default:
			return end(logResult(pod, eos, &outcome{State: api.StateFailed, Message: "the Job failed: " + jobMessage(job)}))
		}
	}
	if pod == nil {
		return v
	}

	// Waiting for capacity.
	if c := podCondition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
		if m.PendingSince.IsZero() {
			m.PendingSince = now
		}
		waited := now.Sub(m.PendingSince)
		if waited >= lim.PendingTimeout {
			return end(&outcome{State: api.StateFailed, DeleteJob: true, Message: fmt.Sprintf("no capacity to run the script pod for %s (scriptPods.pendingTimeout): %s", lim.PendingTimeout, c.Message)})
		}
		if c.Message != m.WaitingMsg || now.Sub(m.WaitingSaid) >= capacityReportEvery {
			v.Say = append(v.Say, fmt.Sprintf("waiting for capacity (%s so far): %s", waited.Round(time.Second), c.Message))
			m.WaitingMsg, m.WaitingSaid = c.Message, now
		}
		v.Next = min(v.Next, m.PendingSince.Add(lim.PendingTimeout).Sub(now), m.WaitingSaid.Add(capacityReportEvery).Sub(now))
	} else if !m.PendingSince.IsZero() {
		v.Say = append(v.Say, fmt.Sprintf("capacity found after %s: pod scheduled", now.Sub(m.PendingSince).Round(time.Second)))
		m.PendingSince, m.WaitingMsg = time.Time{}, ""
	}

	// Image and container start problems.
	for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		w := st.State.Waiting
		if w == nil || !startProblem(w.Reason) {
			delete(m.ProblemSince, st.Name)
			continue
		}
		what := fmt.Sprintf("image %s (container %s): %s: %s", st.Image, st.Name, w.Reason, w.Message)
		if w.Reason == "InvalidImageName" {
			return end(&outcome{State: api.StateFailed, DeleteJob: true, Message: "invalid " + what})
		}
		since, ok := m.ProblemSince[st.Name]
		if !ok {
			since = now
			m.ProblemSince[st.Name] = now
		}
		if m.ProblemSaid[st.Name] != w.Reason {
			v.Say = append(v.Say, what)
			m.ProblemSaid[st.Name] = w.Reason
		}
		if now.Sub(since) >= lim.ImagePullGrace {
			verb := "could not be pulled"
			if !strings.Contains(w.Reason, "Image") {
				verb = "could not be started"
			}
			return end(&outcome{State: api.StateFailed, DeleteJob: true, Message: fmt.Sprintf("image %s (container %s) %s; gave up after %s (scriptPods.imagePullGrace): %s: %s", st.Image, st.Name, verb, lim.ImagePullGrace, w.Reason, w.Message)})
		}
		v.Next = min(v.Next, since.Add(lim.ImagePullGrace).Sub(now))
	}
	if st := containerStatus(pod.Status.InitContainerStatuses, InitContainerName); st != nil && st.State.Terminated != nil && st.State.Terminated.ExitCode != 0 {
		t := st.State.Terminated
		return end(&outcome{State: api.StateFailed, DeleteJob: true, Message: fmt.Sprintf("installing the runner from the worker image %s failed: exit code %d (%s) %s", st.Image, t.ExitCode, t.Reason, t.Message)})
	}
	v.Next = max(v.Next, time.Millisecond)
	return v
}

// startProblem reports whether a container waiting reason means it cannot start (rather than "starting").
func startProblem(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "RegistryUnavailable",
		"CreateContainerConfigError", "CreateContainerError", "RunContainerError":
		return true
	}
	return false
}

// logResult fills in the exit code and message of an ended operation from the runner's end-of-stream marker
// (eos, nil when none was read) and the script container's terminated state; fallback is the outcome when
// neither says anything. Timeouts and cancels keep their state and message, and take the exit code.
func logResult(pod *corev1.Pod, eos *logline.Line, fallback *outcome) *outcome {
	var term *corev1.ContainerStateTerminated
	if pod != nil {
		if st := containerStatus(pod.Status.ContainerStatuses, ScriptContainerName); st != nil {
			term = st.State.Terminated
		}
	}
	out := *fallback
	switch {
	case eos != nil:
		code, err := eos.ExitCode()
		if err != nil {
			out.Message = err.Error()
			break
		}
		out.Usage, _ = eos.Usage() // advice data only: an unreadable one is left out, the result stands
		if term != nil && int(term.ExitCode) != code {
			out.ExitCode = ptr(int(term.ExitCode))
			out.Message = fmt.Sprintf("the runner reported exit code %d but the container ended with %d (%s)", code, term.ExitCode, term.Reason)
			if out.State == api.StateSucceeded {
				out.State = api.StateFailed
			}
			break
		}
		out.ExitCode = ptr(code)
		if fallback.State == api.StateTimedOut || fallback.State == api.StateCancelled {
			break
		}
		if code == 0 {
			out.State, out.Message = api.StateSucceeded, "the script exited with code 0"
		} else {
			out.State, out.Message = api.StateFailed, fmt.Sprintf("the script exited with code %d", code)
		}
	case term != nil:
		out.ExitCode = ptr(int(term.ExitCode))
		if fallback.State == api.StateTimedOut || fallback.State == api.StateCancelled {
			break
		}
		reason := term.Reason
		if reason == "OOMKilled" {
			reason = "OOMKilled: the script used more memory than the pod's limit"
		}
		out.State = api.StateFailed
		out.Message = strings.TrimSpace(fmt.Sprintf("the script container ended with exit code %d without the runner's end-of-stream marker (%s) %s", term.ExitCode, reason, term.Message))
	}
	return &out
}

// newestPod returns the most recently created of an operation's pods (nil when there is none): with
// backoffLimit > 0, the Job's retry after the pods that failed.
func newestPod(pods []*corev1.Pod) *corev1.Pod {
	if len(pods) == 0 {
		return nil
	}
	sorted := append([]*corev1.Pod(nil), pods...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].CreationTimestamp.Before(&sorted[j].CreationTimestamp) })
	return sorted[len(sorted)-1]
}

func containerStatus(sts []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range sts {
		if sts[i].Name == name {
			return &sts[i]
		}
	}
	return nil
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func jobCondition(job *batchv1.Job, types ...batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		c := &job.Status.Conditions[i]
		for _, t := range types {
			if c.Type == t && c.Status == corev1.ConditionTrue {
				return c
			}
		}
	}
	return nil
}

func jobMessage(job *batchv1.Job) string {
	if c := jobCondition(job, batchv1.JobFailed, batchv1.JobFailureTarget); c != nil {
		return strings.TrimSpace(c.Reason + ": " + c.Message)
	}
	return "no reason given"
}

func podFinished(pod *corev1.Pod) bool {
	return pod == nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}
