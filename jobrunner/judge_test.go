package jobrunner

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// What the operation's Job, pods and the clock mean, case by case, with no cluster: each case is one
// observation at one instant and the verdict the worker acts on.
func TestJudge(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lim := limits{PendingTimeout: 15 * time.Minute, ImagePullGrace: time.Minute}

	// Builders of the objects as the informer shows them.
	job := func(conds ...batchv1.JobCondition) *batchv1.Job {
		j := &batchv1.Job{Spec: batchv1.JobSpec{ActiveDeadlineSeconds: ptr(int64(60))}}
		j.Status.Conditions = conds
		return j
	}
	cond := func(typ batchv1.JobConditionType, reason, msg string) batchv1.JobCondition {
		return batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, Reason: reason, Message: msg}
	}
	complete := cond(batchv1.JobComplete, "CompletionsReached", "")
	backoff := cond(batchv1.JobFailed, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
	deadline := cond(batchv1.JobFailed, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
	pod := func(name string, created time.Time, phase corev1.PodPhase, script corev1.ContainerState) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ScriptContainerName, Image: "tools:1", State: script}}
		return p
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	creating := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	exited := func(code int32, reason string) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}
	}
	waiting := func(reason, msg string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	}
	const noNodes = "0/1 nodes are available: 1 Insufficient cpu."
	unschedulable := func(msg string) *corev1.Pod {
		p := pod("p1", t0, corev1.PodPending, corev1.ContainerState{})
		p.Status.ContainerStatuses = nil
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: msg}}
		return p
	}
	withInit := func(p *corev1.Pod, st corev1.ContainerState) *corev1.Pod {
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: InitContainerName, Image: "octo-worker:1", State: st}}
		return p
	}
	evicted := pod("p1", t0, corev1.PodFailed, exited(137, "Error"))
	evicted.Status.Reason = "Evicted"
	nodeLost := pod("p1", t0, corev1.PodFailed, running) // the kubelet is gone: its last report stays
	nodeLost.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByPodGC"}}
	eos := func(payload string) *logline.Line {
		return &logline.Line{Seq: 3, Stream: logline.EOS, Payload: []byte(payload)}
	}
	seen := memory{JobSeen: true}
	pods := func(ps ...*corev1.Pod) []*corev1.Pod { return ps }

	cases := []struct {
		name string
		obs  observation
		now  time.Time
		want verdict
	}{
		// The Job itself.
		{name: "just created, not in the informer yet", obs: observation{StartedAt: t0}, now: t0.Add(10 * time.Second),
			want: verdict{Next: 5 * time.Second}},
		{name: "not in the informer after 30s: ask the API server", obs: observation{StartedAt: t0}, now: t0.Add(30 * time.Second),
			want: verdict{Next: 5 * time.Second, CheckJob: true}},
		{name: "never seen and the API server does not know it", obs: observation{Job: "ns/octo-x", StartedAt: t0, JobGone: true}, now: t0.Add(31 * time.Second),
			want: verdict{Outcome: &outcome{State: api.StateFailed, Message: "Job ns/octo-x was deleted by something other than this worker"}}},
		{name: "deleted by someone else while the log is read", obs: observation{Job: "ns/octo-x", Following: true, FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodRunning, running)), Memory: seen}, now: t0,
			want: verdict{Next: time.Hour, Memory: seen}},
		{name: "deleted by someone else after the script ended", obs: observation{Job: "ns/octo-x", FollowedPod: "p1", EOS: eos("0"), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed"))), Memory: seen}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}, Memory: seen}},

		// Cancel.
		{name: "cancelling: the stream ends when the pod stops", obs: observation{JobObject: job(), Cancelling: true, Following: true, FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodRunning, running))}, now: t0,
			want: verdict{Next: time.Hour}},
		{name: "cancelled once the Job is gone", obs: observation{Cancelling: true, FollowedPod: "p1", EOS: eos("143"), Memory: seen}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateCancelled, Message: "cancelled"}, Memory: seen}},

		// A Job gone when the worker (re)starts supervising its operation, e.g. deleted for a cancel by this
		// worker just before it died: a cancel requested makes it cancelled, else its result is unknown.
		{name: "re-adopted without its Job: ask the API server at once", obs: observation{Adopted: true, StartedAt: t0}, now: t0,
			want: verdict{Next: 5 * time.Second, CheckJob: true}},
		{name: "re-adopted without its Job, no cancel requested: result unknown", obs: observation{Job: "ns/octo-x", Adopted: true, JobGone: true, StartedAt: t0}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, Message: "the operation's Job ns/octo-x no longer exists (the worker was away longer than ttlSecondsAfterFinished, or someone deleted it); its result is unknown"}}},
		{name: "re-adopted without its Job after a cancel: cancelled", obs: observation{Job: "ns/octo-x", Adopted: true, JobGone: true, CancelRequested: true, StartedAt: t0}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateCancelled, Message: "cancelled"}}},
		{name: "re-adopted after a cancel, its pod still stopping", obs: observation{Adopted: true, JobGone: true, CancelRequested: true, Following: true, FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodRunning, running))}, now: t0,
			want: verdict{Next: time.Hour}},
		{name: "re-adopted after a cancel, its pod's end read: cancelled with the exit code", obs: observation{Adopted: true, JobGone: true, CancelRequested: true, FollowedPod: "p1", EOS: eos("143"), Pods: pods(pod("p1", t0, corev1.PodFailed, exited(143, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateCancelled, ExitCode: ptr(143), Message: "cancelled"}}},
		{name: "Job deleted by someone else after a cancel was requested: cancelled", obs: observation{Job: "ns/octo-x", CancelRequested: true, Memory: seen}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateCancelled, Message: "cancelled"}, Memory: seen}},

		// Following.
		{name: "pod still creating its containers", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, creating))}, now: t0,
			want: verdict{Next: time.Hour, Memory: seen}},
		{name: "script started: follow it", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodRunning, running))}, now: t0,
			want: verdict{Next: time.Hour, Follow: "p1", Memory: seen}},
		{name: "script ended before the worker looked: follow it, then report", obs: observation{JobObject: job(complete), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Next: time.Hour, Follow: "p1", Memory: seen}},
		{name: "Job done while the log is still read", obs: observation{JobObject: job(complete), Following: true, FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Next: time.Hour, Memory: seen}},

		// Waiting for capacity.
		{name: "unschedulable: waiting for capacity", obs: observation{JobObject: job(), Pods: pods(unschedulable(noNodes))}, now: t0,
			want: verdict{Next: time.Minute, Say: []string{"waiting for capacity (0s so far): " + noNodes},
				Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}},
		{name: "still waiting, said already", obs: observation{JobObject: job(), Pods: pods(unschedulable(noNodes)), Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}, now: t0.Add(20 * time.Second),
			want: verdict{Next: 40 * time.Second, Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}},
		{name: "still waiting, said again every minute", obs: observation{JobObject: job(), Pods: pods(unschedulable(noNodes)), Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}, now: t0.Add(time.Minute),
			want: verdict{Next: time.Minute, Say: []string{"waiting for capacity (1m0s so far): " + noNodes},
				Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0.Add(time.Minute)}}},
		{name: "still waiting, the scheduler says something new", obs: observation{JobObject: job(), Pods: pods(unschedulable("0/2 nodes are available")), Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}, now: t0.Add(10 * time.Second),
			want: verdict{Next: time.Minute, Say: []string{"waiting for capacity (10s so far): 0/2 nodes are available"},
				Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: "0/2 nodes are available", WaitingSaid: t0.Add(10 * time.Second)}}},
		{name: "capacity found", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, creating)), Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0}}, now: t0.Add(2 * time.Minute),
			want: verdict{Next: time.Hour, Say: []string{"capacity found after 2m0s: pod scheduled"}, Memory: memory{JobSeen: true, WaitingSaid: t0}}},
		{name: "no capacity within pendingTimeout", obs: observation{JobObject: job(), Pods: pods(unschedulable(noNodes)), Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0.Add(14 * time.Minute)}}, now: t0.Add(15 * time.Minute),
			want: verdict{Outcome: &outcome{State: api.StateFailed, DeleteJob: true, Message: "no capacity to run the script pod for 15m0s (scriptPods.pendingTimeout): " + noNodes},
				Memory: memory{JobSeen: true, PendingSince: t0, WaitingMsg: noNodes, WaitingSaid: t0.Add(14 * time.Minute)}}},

		// Images and container start.
		{name: "bad image: said, tolerated within imagePullGrace", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, waiting("ImagePullBackOff", "Back-off pulling image")))}, now: t0,
			want: verdict{Next: time.Minute, Say: []string{"image tools:1 (container script): ImagePullBackOff: Back-off pulling image"},
				Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "ImagePullBackOff"}}}},
		{name: "bad image past imagePullGrace", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, waiting("ErrImagePull", "not found"))),
			Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "ImagePullBackOff"}}}, now: t0.Add(time.Minute),
			want: verdict{Outcome: &outcome{State: api.StateFailed, DeleteJob: true, Message: "image tools:1 (container script) could not be pulled; gave up after 1m0s (scriptPods.imagePullGrace): ErrImagePull: not found"},
				Say:    []string{"image tools:1 (container script): ErrImagePull: not found"},
				Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "ErrImagePull"}}}},
		{name: "container cannot start past imagePullGrace", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, waiting("CreateContainerConfigError", "secret not found"))),
			Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "CreateContainerConfigError"}}}, now: t0.Add(2 * time.Minute),
			want: verdict{Outcome: &outcome{State: api.StateFailed, DeleteJob: true, Message: "image tools:1 (container script) could not be started; gave up after 1m0s (scriptPods.imagePullGrace): CreateContainerConfigError: secret not found"},
				Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "CreateContainerConfigError"}}}},
		{name: "image pulled after a problem", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, creating)),
			Memory: memory{JobSeen: true, ProblemSince: map[string]time.Time{ScriptContainerName: t0}, ProblemSaid: map[string]string{ScriptContainerName: "ImagePullBackOff"}}}, now: t0.Add(30 * time.Second),
			want: verdict{Next: time.Hour, Memory: memory{JobSeen: true, ProblemSaid: map[string]string{ScriptContainerName: "ImagePullBackOff"}}}},
		{name: "invalid image name: at once", obs: observation{JobObject: job(), Pods: pods(pod("p1", t0, corev1.PodPending, waiting("InvalidImageName", "couldn't parse image name")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, DeleteJob: true, Message: "invalid image tools:1 (container script): InvalidImageName: couldn't parse image name"}, Memory: seen}},
		{name: "runner install failed", obs: observation{JobObject: job(), Pods: pods(withInit(pod("p1", t0, corev1.PodFailed, creating), corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "no such file"}}))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, DeleteJob: true, Message: "installing the runner from the worker image octo-worker:1 failed: exit code 1 (Error) no such file"}, Memory: seen}},

		// Timeout.
		{name: "deadline exceeded while the pod stops", obs: observation{JobObject: job(deadline), Following: true, FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodRunning, running))}, now: t0,
			want: verdict{Next: time.Hour, Memory: seen}},
		{name: "deadline exceeded", obs: observation{JobObject: job(deadline), FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodFailed, exited(137, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateTimedOut, ExitCode: ptr(137), Message: "ran longer than its timeout (activeDeadlineSeconds 60); Kubernetes stopped it"}, Memory: seen}},
		{name: "deadline exceeded, the runner wrote its marker", obs: observation{JobObject: job(deadline), FollowedPod: "p1", EOS: eos("143"), Pods: pods(pod("p1", t0, corev1.PodFailed, exited(143, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateTimedOut, ExitCode: ptr(143), Message: "ran longer than its timeout (activeDeadlineSeconds 60); Kubernetes stopped it"}, Memory: seen}},

		// Results: the marker and the container state.
		{name: "succeeded", obs: observation{JobObject: job(complete), FollowedPod: "p1", EOS: eos("0"), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}, Memory: seen}},
		{name: "succeeded, the marker carrying the script's usage", obs: observation{JobObject: job(complete), FollowedPod: "p1", EOS: eos(`0 {"peak_memory_bytes":1048576,"cpu_seconds":0.5,"source":"cgroup"}`), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Usage: &api.Usage{PeakMemoryBytes: 1 << 20, CPUSeconds: 0.5, Source: api.UsageCgroup}, Message: "the script exited with code 0"}, Memory: seen}},
		{name: "a forged usage is left out, the result stands", obs: observation{JobObject: job(complete), FollowedPod: "p1", EOS: eos(`0 {"peak_memory_bytes":-1,"cpu_seconds":0.5,"source":"cgroup"}`), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}, Memory: seen}},
		{name: "script failed", obs: observation{JobObject: job(backoff), FollowedPod: "p1", EOS: eos("3"), Pods: pods(pod("p1", t0, corev1.PodFailed, exited(3, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(3), Message: "the script exited with code 3"}, Memory: seen}},
		{name: "exit code mismatch: the container's state wins", obs: observation{JobObject: job(complete), FollowedPod: "p1", EOS: eos("0"), Pods: pods(pod("p1", t0, corev1.PodFailed, exited(1, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(1), Message: "the runner reported exit code 0 but the container ended with 1 (Error)"}, Memory: seen}},
		{name: "exit code mismatch on a failed Job", obs: observation{JobObject: job(backoff), FollowedPod: "p1", EOS: eos("2"), Pods: pods(pod("p1", t0, corev1.PodFailed, exited(137, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(137), Message: "the runner reported exit code 2 but the container ended with 137 (Error)"}, Memory: seen}},
		{name: "unreadable marker", obs: observation{JobObject: job(complete), FollowedPod: "p1", EOS: eos("zero"), Pods: pods(pod("p1", t0, corev1.PodSucceeded, exited(0, "Completed")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: `decoding exit code of end-of-stream marker "zero": strconv.Atoi: parsing "zero": invalid syntax`}, Memory: seen}},
		{name: "missing end marker", obs: observation{JobObject: job(backoff), FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodFailed, exited(2, "Error")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(2), Message: "the script container ended with exit code 2 without the runner's end-of-stream marker (Error)"}, Memory: seen}},
		{name: "OOMKilled", obs: observation{JobObject: job(backoff), FollowedPod: "p1", Pods: pods(pod("p1", t0, corev1.PodFailed, exited(137, "OOMKilled")))}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(137), Message: "the script container ended with exit code 137 without the runner's end-of-stream marker (OOMKilled: the script used more memory than the pod's limit)"}, Memory: seen}},
		{name: "evicted", obs: observation{JobObject: job(backoff), FollowedPod: "p1", Pods: pods(evicted)}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, ExitCode: ptr(137), Message: "the script container ended with exit code 137 without the runner's end-of-stream marker (Error)"}, Memory: seen}},
		{name: "node lost", obs: observation{JobObject: job(backoff), FollowedPod: "p1", Pods: pods(nodeLost)}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, Message: "the Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"}, Memory: seen}},
		{name: "Job ended without a pod", obs: observation{JobObject: job(backoff)}, now: t0,
			want: verdict{Outcome: &outcome{State: api.StateFailed, Message: "the Job ended without a pod: BackoffLimitExceeded: Job has reached the specified backoff limit"}, Memory: seen}},

		// Re-adoption of a Job with backoffLimit > 0: a pod failed and the Job made a retry pod.
		{name: "re-adopted with a failed pod and a retry: follow the retry", obs: observation{JobObject: job(),
			Pods: pods(pod("retry", t0.Add(time.Minute), corev1.PodRunning, running), pod("first", t0, corev1.PodFailed, exited(1, "Error")))}, now: t0.Add(2 * time.Minute),
			want: verdict{Next: time.Hour, Follow: "retry", Memory: seen}},
		{name: "re-adopted, first pod read: move on to the retry", obs: observation{JobObject: job(), FollowedPod: "first", EOS: eos("1"),
			Pods: pods(pod("first", t0, corev1.PodFailed, exited(1, "Error")), pod("retry", t0.Add(time.Minute), corev1.PodRunning, running))}, now: t0.Add(2 * time.Minute),
			want: verdict{Next: time.Hour, Follow: "retry", Memory: seen}},
		{name: "re-adopted, the retry succeeded: judged on the retry", obs: observation{JobObject: job(complete), FollowedPod: "retry", EOS: eos("0"),
			Pods: pods(pod("first", t0, corev1.PodFailed, exited(1, "Error")), pod("retry", t0.Add(time.Minute), corev1.PodSucceeded, exited(0, "Completed")))}, now: t0.Add(3 * time.Minute),
			want: verdict{Outcome: &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}, Memory: seen}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := tc.obs.Memory.clone()
			got := judge(tc.obs, tc.now, lim)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("judge (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, tc.obs.Memory, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("judge changed the memory it was given (-before +after):\n%s", diff)
			}
		})
	}
}
