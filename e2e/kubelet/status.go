package kubelet

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// push writes the worker's view of the pod to the API server's pod status, retrying on conflicts.
func (w *podWorker) push() {
	w.pushMu.Lock()
	defer w.pushMu.Unlock()
	ctx := w.node.ctx
	pods := w.node.cfg.Client.CoreV1().Pods(w.pod().Namespace)
	pod := w.pod().DeepCopy()
	delay := 100 * time.Millisecond
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		pod.Status = w.buildStatus(&pod.Status)
		_, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
		if !apierrors.IsConflict(err) {
			w.log.WithError(err).Debug("updating pod status")
			if !sleepCtx(ctx, delay) {
				return
			}
			delay *= 2
		}
		fresh, gerr := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			return
		}
		if gerr != nil {
			continue
		}
		if fresh.UID != w.uid {
			return
		}
		pod = fresh
	}
	if ctx.Err() == nil {
		w.log.Warn("giving up updating pod status after 10 attempts")
	}
}

// buildStatus merges the worker's state into the pod's current status, keeping what others own (the
// scheduler's PodScheduled condition, other controllers' conditions, qosClass).
func (w *podWorker) buildStatus(cur *corev1.PodStatus) corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := *cur.DeepCopy()
	st := &w.st
	s.Phase, s.Reason, s.Message = st.phase, st.reason, st.message
	if st.phase == corev1.PodPending && runningPhase(st) {
		s.Phase = corev1.PodRunning
	}
	s.HostIP, s.PodIP = "127.0.0.1", "127.0.0.1"
	s.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	s.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	if !st.startTime.IsZero() {
		t := st.startTime
		s.StartTime = &t
	}
	s.InitContainerStatuses = nil
	for _, c := range st.init {
		s.InitContainerStatuses = append(s.InitContainerStatuses, *c.status.DeepCopy())
	}
	s.ContainerStatuses = nil
	for _, c := range st.ctrs {
		s.ContainerStatuses = append(s.ContainerStatuses, *c.status.DeepCopy())
	}

	terminal := st.phase == corev1.PodSucceeded || st.phase == corev1.PodFailed
	setCondition(&s, corev1.PodReadyToStartContainers, st.sandboxReady && !terminal, "", "")

	var notInit []string
	for _, c := range st.init {
		if t := c.status.State.Terminated; t == nil || t.ExitCode != 0 {
			notInit = append(notInit, c.status.Name)
		}
	}
	if len(notInit) == 0 || st.phase == corev1.PodSucceeded {
		setCondition(&s, corev1.PodInitialized, true, "", "")
	} else {
		setCondition(&s, corev1.PodInitialized, false, "ContainersNotInitialized",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " ")))
	}

	var notReady []string
	for _, c := range st.ctrs {
		if !c.status.Ready {
			notReady = append(notReady, c.status.Name)
		}
	}
	switch {
	case terminal:
		setCondition(&s, corev1.ContainersReady, false, "PodCompleted", "")
		setCondition(&s, corev1.PodReady, false, "PodCompleted", "")
	case len(notReady) == 0 && len(notInit) == 0:
		setCondition(&s, corev1.ContainersReady, true, "", "")
		setCondition(&s, corev1.PodReady, true, "", "")
	default:
		msg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
		setCondition(&s, corev1.ContainersReady, false, "ContainersNotReady", msg)
		setCondition(&s, corev1.PodReady, false, "ContainersNotReady", msg)
	}
	return s
}

// runningPhase tells whether a pod whose phase is not final is Running: its init containers are done, every
// container has started at least once, and one is running (or restarting).
func runningPhase(st *podState) bool {
	for _, c := range st.init {
		if t := c.status.State.Terminated; t == nil || t.ExitCode != 0 {
			return false
		}
	}
	live := false
	for _, c := range st.ctrs {
		s := c.status.State
		switch {
		case s.Running != nil:
			live = true
		case s.Waiting != nil && c.status.LastTerminationState.Terminated != nil:
			live = true
		case s.Waiting != nil:
			return false
		}
	}
	return live
}

// setCondition sets a pod condition, keeping its transition time when the status did not change.
func setCondition(s *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason, message string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	for i := range s.Conditions {
		c := &s.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, message
		return
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: message, LastTransitionTime: now})
}
