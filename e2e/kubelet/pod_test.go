package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExitPhase(t *testing.T) {
	t.Parallel()
	exited := func(code int32) *ctrState {
		return &ctrState{status: corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}}
	}
	running := &ctrState{status: corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	tests := []struct {
		name       string
		init, ctrs []*ctrState
		withInit   bool
		want       corev1.PodPhase
	}{
		{name: "all exited 0", ctrs: []*ctrState{exited(0), exited(0)}, want: corev1.PodSucceeded},
		{name: "one exited 1", ctrs: []*ctrState{exited(0), exited(1)}, want: corev1.PodFailed},
		{name: "one still running", ctrs: []*ctrState{exited(0), running}, want: corev1.PodFailed},
		{name: "init not counted", init: []*ctrState{running}, ctrs: []*ctrState{exited(0)}, want: corev1.PodSucceeded},
		{name: "init that never finished", init: []*ctrState{running}, ctrs: []*ctrState{exited(0)}, withInit: true, want: corev1.PodFailed},
		{name: "init and containers exited 0", init: []*ctrState{exited(0)}, ctrs: []*ctrState{exited(0)}, withInit: true, want: corev1.PodSucceeded},
	}
	for _, tc := range tests {
		w := &podWorker{st: podState{init: tc.init, ctrs: tc.ctrs}}
		if got := w.exitPhase(tc.withInit); got != tc.want {
			t.Errorf("%s: exitPhase(%v) = %s, want %s", tc.name, tc.withInit, got, tc.want)
		}
	}
}
