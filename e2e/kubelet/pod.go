package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Why a pod worker stops its containers.
type stopCause struct {
	reason string // deleted, deadline
	grace  time.Duration
	gone   bool // the pod no longer exists in the API
}

func (c *stopCause) Error() string { return "pod " + c.reason }

// podWorker owns one pod on this node: it runs the pod's containers and reports its status.
type podWorker struct {
	node *Node
	uid  types.UID
	dir  string
	log  *logrus.Entry

	ctx    context.Context // ends when the containers must stop; context.Cause says why
	cancel context.CancelCauseFunc

	delOnce  sync.Once
	deleted  chan struct{} // closed when the pod is being deleted
	delCause *stopCause    // set before deleted is closed

	mu     sync.Mutex
	latest *corev1.Pod
	st     podState

	pushMu sync.Mutex // serializes status updates
}

// podState is what the worker knows and reports.
type podState struct {
	phase        corev1.PodPhase
	reason       string
	message      string
	startTime    metav1.Time
	sandboxReady bool
	init         []*ctrState
	ctrs         []*ctrState
}

type ctrState struct {
	status corev1.ContainerStatus
	logs   []*containerLog // one per run; the last is the current one
}

func newPodWorker(n *Node, ctx context.Context, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		node:    n,
		uid:     pod.UID,
		dir:     filepath.Join(n.cfg.StateDir, "pods", string(pod.UID)),
		log:     n.log.WithFields(logrus.Fields{"pod": pod.Namespace + "/" + pod.Name}),
		latest:  pod,
		deleted: make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	for _, c := range pod.Spec.InitContainers {
		w.st.init = append(w.st.init, &ctrState{status: corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}})
	}
	for _, c := range pod.Spec.Containers {
		reason := "ContainerCreating"
		if len(pod.Spec.InitContainers) > 0 {
			reason = "PodInitializing"
		}
		w.st.ctrs = append(w.st.ctrs, &ctrState{status: corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}})
	}
	w.st.phase = corev1.PodPending
	return w
}

// update records the newest version of the pod; a deletion stops its containers.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.latest = pod
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		w.markDeleted(&stopCause{reason: "deleted", grace: grace})
	}
}

// removed records that the pod is gone from the API (deleted with no grace, or its node changed).
func (w *podWorker) removed() {
	w.markDeleted(&stopCause{reason: "deleted", gone: true})
}

func (w *podWorker) markDeleted(c *stopCause) {
	w.delOnce.Do(func() {
		w.delCause = c
		w.cancel(c)
		close(w.deleted)
	})
}

func (w *podWorker) pod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// run drives the pod from start to its final deletion.
func (w *podWorker) run() {
	pod := w.pod()
	defer func() {
		if err := os.RemoveAll(w.dir); err != nil {
			w.log.WithError(err).Warn("removing pod directory")
		}
	}()
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	started := !terminal && pod.DeletionTimestamp == nil
	switch {
	case started && pod.Status.StartTime != nil:
		// Started by an earlier run of this node: its processes are gone.
		w.lost(pod)
	case started:
		w.lifecycle(pod)
	}
	select {
	case <-w.deleted:
	case <-w.node.ctx.Done():
		return // the node is stopping: its containers are already killed
	}
	if w.delCause.gone {
		return
	}
	if !started && !terminal {
		w.finish()
	}
	// Remove the pod from the API, as the kubelet does once its containers are gone (delete with grace 0).
	uid := w.uid
	err := w.node.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(w.node.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && w.node.ctx.Err() == nil {
		w.log.WithError(err).Warn("deleting terminated pod")
	}
}

// lost reports a pod whose containers an earlier run of this node started as failed, the way the kubelet
// reports containers that disappeared.
func (w *podWorker) lost(pod *corev1.Pod) {
	w.mu.Lock()
	w.st.startTime = *pod.Status.StartTime
	w.st.sandboxReady = true
	seed := func(states []*ctrState, statuses []corev1.ContainerStatus) {
		for _, cs := range states {
			for _, s := range statuses {
				if s.Name == cs.status.Name {
					cs.status = *s.DeepCopy()
				}
			}
			if cs.status.State.Terminated == nil {
				cs.status.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137,
					Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated"}}
				cs.status.Ready = false
			}
		}
	}
	seed(w.st.init, pod.Status.InitContainerStatuses)
	seed(w.st.ctrs, pod.Status.ContainerStatuses)
	w.st.phase = corev1.PodFailed
	w.mu.Unlock()
	w.push()
}

// lifecycle runs the pod until its phase is final or w.ctx ends.
func (w *podWorker) lifecycle(pod *corev1.Pod) {
	ctx := w.ctx
	now := metav1.Now()
	if pod.Status.StartTime != nil {
		now = *pod.Status.StartTime
	}
	w.mu.Lock()
	w.st.startTime = now
	w.mu.Unlock()
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
		left := time.Until(now.Add(time.Duration(*d) * time.Second))
		t := time.AfterFunc(left, func() { w.cancel(&stopCause{reason: "deadline", grace: terminationGrace(pod)}) })
		defer t.Stop()
	}
	w.push()

	vols, ok := w.retry(ctx, "FailedMount", func() (map[string]volume, error) { return w.setupVolumes(ctx, pod) })
	if !ok {
		w.finish()
		return
	}
	w.mu.Lock()
	w.st.sandboxReady = true
	w.mu.Unlock()
	w.push()

	for i := range pod.Spec.InitContainers {
		for attempt := 0; ; attempt++ {
			code, ran := w.runContainer(ctx, pod, vols, true, i)
			if !ran || ctx.Err() != nil {
				w.finish()
				return
			}
			if code == 0 {
				break
			}
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				w.setPhase(corev1.PodFailed, "", "")
				return
			}
			if !w.crashLoopBackOff(ctx, pod, w.st.init[i], true, i, attempt) {
				w.finish()
				return
			}
		}
	}
	var wg sync.WaitGroup
	for i := range pod.Spec.Containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; ; attempt++ {
				code, ran := w.runContainer(ctx, pod, vols, false, i)
				if !ran || ctx.Err() != nil {
					return
				}
				switch pod.Spec.RestartPolicy {
				case corev1.RestartPolicyNever:
					return
				case corev1.RestartPolicyOnFailure:
					if code == 0 {
						return
					}
				}
				if !w.crashLoopBackOff(ctx, pod, w.st.ctrs[i], false, i, attempt) {
					return
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		w.finish()
		return
	}
	w.setPhase(w.exitPhase(false), "", "")
}

// finish sets the pod's final phase after its containers were stopped early.
func (w *podWorker) finish() {
	var cause *stopCause
	if !errors.As(context.Cause(w.ctx), &cause) {
		return
	}
	if cause.reason == "deadline" {
		w.node.recorder.Event(w.ref(""), corev1.EventTypeWarning, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
		w.setPhase(corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
		return
	}
	// Deleted: the phase follows the containers' exit codes, and a pod whose containers never all ran
	// failed.
	w.setPhase(w.exitPhase(true), "", "")
}

// exitPhase is Succeeded when every container (and, with init, every init container) terminated with exit
// code 0, else Failed.
func (w *podWorker) exitPhase(init bool) corev1.PodPhase {
	w.mu.Lock()
	defer w.mu.Unlock()
	cs := w.st.ctrs
	if init {
		cs = append(append([]*ctrState{}, w.st.init...), cs...)
	}
	for _, c := range cs {
		if t := c.status.State.Terminated; t == nil || t.ExitCode != 0 {
			return corev1.PodFailed
		}
	}
	return corev1.PodSucceeded
}

func (w *podWorker) setPhase(phase corev1.PodPhase, reason, message string) {
	w.mu.Lock()
	w.st.phase, w.st.reason, w.st.message = phase, reason, message
	for _, c := range append(append([]*ctrState{}, w.st.init...), w.st.ctrs...) {
		if c.status.State.Terminated == nil && c.status.State.Running == nil && reason == "DeadlineExceeded" {
			// A container that never started is reported as terminated with the pod.
			c.status.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated"}}
		}
	}
	w.mu.Unlock()
	w.push()
}

func terminationGrace(pod *corev1.Pod) time.Duration {
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// retry calls f until it succeeds or ctx ends, reporting failures as Warning events with reason.
func (w *podWorker) retry(ctx context.Context, reason string, f func() (map[string]volume, error)) (map[string]volume, bool) {
	delay := 500 * time.Millisecond
	for {
		v, err := f()
		if err == nil {
			return v, true
		}
		w.log.WithError(err).Debug(reason)
		w.node.recorder.Event(w.ref(""), corev1.EventTypeWarning, reason, "MountVolume.SetUp failed: "+err.Error())
		if !sleepCtx(ctx, delay) {
			return nil, false
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// crashLoopBackOff waits before a restart, reporting CrashLoopBackOff as the kubelet does.
func (w *podWorker) crashLoopBackOff(ctx context.Context, pod *corev1.Pod, cs *ctrState, init bool, i, attempt int) bool {
	delay := min(10*time.Second<<attempt, 5*time.Minute)
	name := cs.status.Name
	w.mu.Lock()
	last := cs.status.State
	cs.status.LastTerminationState = last
	cs.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, name, pod.Name, pod.Namespace, pod.UID)}}
	cs.status.Ready = false
	w.mu.Unlock()
	w.node.recorder.Event(w.ref(fieldPath(init, name)), corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container "+name+" in pod "+pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")")
	w.push()
	if !sleepCtx(ctx, delay) {
		return false
	}
	w.mu.Lock()
	cs.status.RestartCount++
	w.mu.Unlock()
	return true
}

func fieldPath(init bool, name string) string {
	if init {
		return "spec.initContainers{" + name + "}"
	}
	return "spec.containers{" + name + "}"
}

func (w *podWorker) ref(fieldPath string) *corev1.ObjectReference {
	p := w.pod()
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID, FieldPath: fieldPath}
}

// setWaiting reports a container as waiting with reason and message.
func (w *podWorker) setWaiting(cs *ctrState, reason, message string) {
	w.mu.Lock()
	cs.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
	w.mu.Unlock()
	w.push()
}
