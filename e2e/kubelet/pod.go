package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	phase := corev1.PodSucceeded
	w.mu.Lock()
	for _, c := range w.st.ctrs {
		if t := c.status.State.Terminated; t == nil || t.ExitCode != 0 {
			phase = corev1.PodFailed
		}
	}
	w.mu.Unlock()
	w.setPhase(phase, "", "")
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
	phase := corev1.PodSucceeded
	w.mu.Lock()
	for _, c := range append(append([]*ctrState{}, w.st.init...), w.st.ctrs...) {
		if t := c.status.State.Terminated; t == nil || t.ExitCode != 0 {
			phase = corev1.PodFailed
		}
	}
	w.mu.Unlock()
	w.setPhase(phase, "", "")
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

// pullImage simulates pulling the container's image: invalid names and names matching the pull-failure
// patterns never succeed. It returns false when ctx ended first.
func (w *podWorker) pullImage(ctx context.Context, c *corev1.Container, cs *ctrState, fp string) bool {
	ref := w.ref(fp)
	if err := validateImageName(c.Image); err != nil {
		msg := fmt.Sprintf("Failed to apply default image tag %q: %v", c.Image, err)
		w.node.recorder.Event(ref, corev1.EventTypeWarning, "InspectFailed", msg)
		w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: InvalidImageName")
		w.setWaiting(cs, "InvalidImageName", msg)
		<-ctx.Done()
		return false
	}
	if w.node.pullFails.match(c.Image) {
		delay := 10 * time.Second
		for {
			w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
			msg := fmt.Sprintf("failed to pull and unpack image %q: failed to resolve reference %q: not found (simulated by the octo process node)", c.Image, c.Image)
			w.node.recorder.Eventf(ref, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %s", c.Image, msg)
			w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
			w.setWaiting(cs, "ErrImagePull", msg)
			if !sleepCtx(ctx, time.Second) {
				return false
			}
			w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
			w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: ImagePullBackOff")
			w.setWaiting(cs, "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", c.Image, msg))
			if !sleepCtx(ctx, delay) {
				return false
			}
			delay = min(delay*2, 5*time.Minute)
		}
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in 0s", c.Image)
	} else {
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
	}
	return true
}

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
	_, logDone := clog.state()
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

// containerSpec turns a container of the pod into what startContainer needs.
func (w *podWorker) containerSpec(ctx context.Context, pod *corev1.Pod, c *corev1.Container, image Image, vols map[string]volume, run int) (containerSpec, error) {
	spec := containerSpec{
		hostname: pod.Name,
		image:    image,
		dir:      c.WorkingDir,
		scratch:  filepath.Join(w.dir, "containers", fmt.Sprintf("%s-%d", c.Name, run)),
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	uid, gid := psc.RunAsUser, psc.RunAsGroup
	if sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if sc.RunAsGroup != nil {
		gid = sc.RunAsGroup
	}
	nonRoot := psc.RunAsNonRoot
	if sc.RunAsNonRoot != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if uid != nil {
		spec.uid = uint32(*uid)
	}
	if gid != nil {
		spec.gid = uint32(*gid)
	} else {
		// Like containerd: the user's primary group from the image's /etc/passwd, else 0.
		_, spec.gid = lookupUser(image, spec.uid)
	}
	if nonRoot != nil && *nonRoot && spec.uid == 0 {
		if uid == nil {
			return spec, &configError{"container has runAsNonRoot and image will run as root (the octo process node's images run as uid 0 unless runAsUser is set)"}
		}
		return spec, &configError{"container's runAsUser breaks non-root policy"}
	}
	if psc.FSGroup != nil {
		spec.groups = append(spec.groups, uint32(*psc.FSGroup))
	}
	for _, g := range psc.SupplementalGroups {
		spec.groups = append(spec.groups, uint32(g))
	}
	spec.readOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	spec.noNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if caps := sc.Capabilities; caps != nil {
		for _, d := range caps.Drop {
			if strings.EqualFold(string(d), "ALL") {
				for cp := 0; cp <= 63; cp++ {
					spec.dropCaps = append(spec.dropCaps, uintptr(cp))
				}
				continue
			}
			if n, ok := capabilityNumbers[strings.TrimPrefix(strings.ToUpper(string(d)), "CAP_")]; ok {
				spec.dropCaps = append(spec.dropCaps, n)
			}
		}
	}

	b := &envBuilder{client: w.node.cfg.Client, pod: pod, apiHost: w.node.cfg.APIServerHost, apiPort: w.node.cfg.APIServerPort}
	env, err := b.build(ctx, c, image, spec.uid)
	if err != nil {
		return spec, err
	}
	spec.env = env
	vars := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	for _, a := range c.Command {
		spec.argv = append(spec.argv, expand(a, vars))
	}
	for _, a := range c.Args {
		spec.argv = append(spec.argv, expand(a, vars))
	}
	if len(spec.argv) == 0 {
		return spec, &configError{"no command specified: the octo process node's images have no entrypoint, so set command or args"}
	}

	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return spec, &configError{fmt.Sprintf("volumeMount %q: no volume of that name in the pod", m.Name)}
		}
		src := v.path
		if m.SubPath != "" {
			src = filepath.Join(v.path, m.SubPath)
			if !v.readOnly {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return spec, fmt.Errorf("volumeMount %q: creating subPath: %w", m.Name, err)
				}
			}
		}
		spec.mounts = append(spec.mounts, bindMount{source: src, target: m.MountPath, readOnly: m.ReadOnly || v.readOnly})
	}
	// The termination message file, like the kubelet's bind-mounted /dev/termination-log.
	msgFile := filepath.Join(w.dir, "termination", fmt.Sprintf("%s-%d", c.Name, run))
	if err := os.MkdirAll(filepath.Dir(msgFile), 0o755); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	if err := os.WriteFile(msgFile, nil, 0o666); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	if err := os.Chmod(msgFile, 0o666); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	spec.mounts = append(spec.mounts, bindMount{source: msgFile, target: terminationPath(c)})
	return spec, nil
}

var capabilityNumbers = map[string]uintptr{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
	"SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
	"NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
	"SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
	"SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
	"AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
	"BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

func ptrTo[T any](v T) *T { return &v }
