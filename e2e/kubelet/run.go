package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// runContainer pulls, creates, starts and waits for one container run. ran is false when the container
// never ran because ctx ended first; code is its exit code otherwise.
func (w *podWorker) runContainer(ctx context.Context, pod *corev1.Pod, vols map[string]volume, init bool, i int) (code int, ran bool) {
	c := &pod.Spec.Containers[i]
	cs := w.st.ctrs[i]
	if init {
		c, cs = &pod.Spec.InitContainers[i], w.st.init[i]
	}
	fp := fieldPath(init, c.Name)
	ref := w.ref(fp)
	if init {
		w.setWaiting(cs, "PodInitializing", "")
	} else {
		w.setWaiting(cs, "ContainerCreating", "")
	}
	if !w.pullImage(ctx, c, cs, fp) {
		return 0, false
	}
	image := w.node.cfg.Images[c.Image]
	run := int(cs.status.RestartCount)
	var spec containerSpec
	for {
		var err error
		spec, err = w.containerSpec(ctx, pod, c, image, vols, run)
		if err == nil {
			break
		}
		var ce *configError
		if !errors.As(err, &ce) && ctx.Err() != nil {
			return 0, false
		}
		w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
		w.setWaiting(cs, "CreateContainerConfigError", err.Error())
		if !sleepCtx(ctx, 2*time.Second) {
			return 0, false
		}
	}
	logPath := filepath.Join(w.dir, "logs", fmt.Sprintf("%s-%d.log", c.Name, run))
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return w.startFailed(cs, ref, err), true
	}
	clog, err := newContainerLog(logPath)
	if err != nil {
		return w.startFailed(cs, ref, err), true
	}
	w.mu.Lock()
	cs.logs = append(cs.logs, clog)
	w.mu.Unlock()
	outR, outW, err := os.Pipe()
	if err != nil {
		return w.startFailed(cs, ref, err), true
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return w.startFailed(cs, ref, err), true
	}
	spec.stdout, spec.stderr = outW, errW
	clog.addStreams(2)
	go clog.copyStream("stdout", outR)
	go clog.copyStream("stderr", errR)
	containerID := fmt.Sprintf("octo://%s-%s-%d", pod.UID, c.Name, run)
	w.node.recorder.Event(ref, corev1.EventTypeNormal, "Created", "Created container: "+c.Name)
	proc, err := startContainer(spec)
	outW.Close()
	errW.Close()
	if err != nil {
		return w.startFailed(cs, ref, err), true
	}
	started := metav1.Now()
	w.mu.Lock()
	cs.status.ContainerID = containerID
	cs.status.ImageID = "octo-process://" + c.Image
	cs.status.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	cs.status.Started = ptrTo(true)
	cs.status.Ready = !init
	w.mu.Unlock()
	w.node.recorder.Event(ref, corev1.EventTypeNormal, "Started", "Started container "+c.Name)
	w.push()

	select {
	case <-proc.done:
	case <-ctx.Done():
		grace := time.Duration(0)
		var cause *stopCause
		if errors.As(context.Cause(ctx), &cause) {
			grace = cause.grace
		}
		w.node.recorder.Event(ref, corev1.EventTypeNormal, "Killing", "Stopping container "+c.Name)
		if grace > 0 {
			proc.signal(syscall.SIGTERM)
			t := time.NewTimer(grace)
			select {
			case <-proc.done:
			case <-t.C:
			}
			t.Stop()
		}
		proc.signal(syscall.SIGKILL)
		<-proc.done
	}
	_, logDone, _ := clog.state()
	<-logDone
	finished := metav1.Now()
	term := &corev1.ContainerStateTerminated{ExitCode: int32(proc.exitCode), StartedAt: started, FinishedAt: finished, ContainerID: containerID, Reason: "Completed"}
	if proc.exitCode != 0 {
		term.Reason = "Error"
	}
	if proc.err != nil {
		term.Message = proc.err.Error()
	}
	term.Message = w.terminationMessage(c, spec, clog, proc.exitCode, term.Message)
	w.mu.Lock()
	cs.status.State = corev1.ContainerState{Terminated: term}
	cs.status.Ready = init && proc.exitCode == 0
	cs.status.Started = ptrTo(false)
	w.mu.Unlock()
	w.push()
	return proc.exitCode, true
}

// startFailed reports a container that could not start (the runtime's StartError) and returns its exit
// code, 128.
func (w *podWorker) startFailed(cs *ctrState, ref *corev1.ObjectReference, err error) int {
	msg := "failed to start container: " + err.Error()
	w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: "+msg)
	now := metav1.Now()
	w.mu.Lock()
	cs.status.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: msg, StartedAt: now, FinishedAt: now}}
	w.mu.Unlock()
	w.push()
	return 128
}

// terminationMessage reads the file the container wrote at terminationMessagePath (at most 4096 bytes),
// falling back to the log's tail when the policy says so.
func (w *podWorker) terminationMessage(c *corev1.Container, spec containerSpec, clog *containerLog, code int, fallback string) string {
	for _, m := range spec.mounts {
		if m.target != terminationPath(c) {
			continue
		}
		b, err := os.ReadFile(m.source)
		if err == nil && len(b) > 0 {
			if len(b) > 4096 {
				b = b[:4096]
			}
			return string(b)
		}
	}
	if c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && code != 0 {
		return clog.tail(80, 2048)
	}
	return fallback
}

func terminationPath(c *corev1.Container) string {
	if c.TerminationMessagePath != "" {
		return c.TerminationMessagePath
	}
	return corev1.TerminationMessagePathDefault
}
