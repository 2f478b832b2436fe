package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/e2e/kubelet"
)

// A pod's output reaches the log endpoint through the API server (what `kubectl logs` uses), live with
// follow, and with timestamps, sinceTime, tailLines and limitBytes.
func TestLogs(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	sync := t.TempDir()
	pod := shPod("logs", `echo one; echo two; while [ ! -e /sync/go ]; do sleep 0.05; done; sleep 1.1; echo three`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "sync", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: sync}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "sync", MountPath: "/sync"}}
	createPod(t, ns, pod)
	waitPod(t, ns, "logs", "running", running)

	// follow: the first lines arrive while the container is still blocked, the rest when it goes on, and
	// the stream ends when the container exits.
	stream, err := kube.Client.CoreV1().Pods(ns).GetLogs("logs", &corev1.PodLogOptions{Follow: true}).Stream(testContext(t))
	if err != nil {
		t.Fatalf("following logs: %v", err)
	}
	defer stream.Close()
	lines := bufio.NewScanner(stream)
	for _, want := range []string{"one", "two"} {
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("follow: got %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	if err := os.WriteFile(filepath.Join(sync, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "three" {
		t.Fatalf("follow: got %q (%v), want three", lines.Text(), lines.Err())
	}
	if lines.Scan() {
		t.Fatalf("follow: unexpected line %q after the container's last", lines.Text())
	}
	if err := lines.Err(); err != nil {
		t.Fatalf("follow: stream ended with %v, want a clean end", err)
	}
	p := waitPod(t, ns, "logs", "finished", terminal)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s", describe(p))
	}

	// timestamps: every line starts with an RFC 3339 time.
	stamped := strings.Split(strings.TrimSuffix(podLogs(t, ns, "logs", &corev1.PodLogOptions{Timestamps: true}), "\n"), "\n")
	if len(stamped) != 3 {
		t.Fatalf("timestamps: got %q, want 3 lines", stamped)
	}
	times := make([]time.Time, len(stamped))
	for i, l := range stamped {
		ts, text, _ := strings.Cut(l, " ")
		if times[i], err = time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Fatalf("timestamps: line %q: %v", l, err)
		}
		if want := []string{"one", "two", "three"}[i]; text != want {
			t.Fatalf("timestamps: line %d is %q, want %q", i, text, want)
		}
	}

	// sinceTime (whole seconds on the wire): the container slept 1.1 s between two and three, so the
	// second of "three" starts after "two".
	since := metav1.NewTime(times[2].Truncate(time.Second))
	if !times[1].Before(since.Time) {
		t.Fatalf("test assumption: %v is not before %v", times[1], since)
	}
	cases := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"all", corev1.PodLogOptions{}, "one\ntwo\nthree\n"},
		{"sinceTime", corev1.PodLogOptions{SinceTime: &since}, "three\n"},
		{"tailLines", corev1.PodLogOptions{TailLines: ptr(int64(2))}, "two\nthree\n"},
		{"limitBytes", corev1.PodLogOptions{LimitBytes: ptr(int64(5))}, "one\nt"},
		{"tailLines and limitBytes", corev1.PodLogOptions{TailLines: ptr(int64(1)), LimitBytes: ptr(int64(3))}, "thr"},
	}
	for _, tc := range cases {
		if got := podLogs(t, ns, "logs", &tc.opts); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// An init container and the container share an emptyDir; the init container runs first and to completion.
func TestInitContainerSharesEmptyDir(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	pod := shPod("init", `cat /shared/greeting; ls -ld /shared | cut -c1-10`)
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "debian:bookworm",
		Command:      []string{"sh", "-c", "echo hello from init > /shared/greeting"},
		VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p := runPod(t, ns, pod)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s", describe(p))
	}
	if got := podLogs(t, ns, "init", &corev1.PodLogOptions{}); got != "hello from init\ndrwxrwxrwx\n" {
		t.Errorf("logs: got %q, want the init container's file and an emptyDir with mode 0777", got)
	}
	init := containerStatus(t, p, "setup")
	if term := init.State.Terminated; term == nil || term.Reason != "Completed" || term.ExitCode != 0 {
		t.Errorf("init container status: %+v", init.State)
	}
	main := containerStatus(t, p, "main").State.Terminated
	if main == nil || main.StartedAt.Before(&init.State.Terminated.FinishedAt) {
		t.Errorf("main container started before the init container finished: %+v", main)
	}
}

// Secret volumes are readable by a non-root pod through fsGroup; env comes from secrets, config maps and
// the downward API; workingDir and runAsUser are honoured.
func TestSecretVolumeAndEnvironment(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	ctx := testContext(t)
	if _, err := kube.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		StringData: map[string]string{"password": "s3cr3t", "user": "octo"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"color": "blue"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := shPod("secret", `cat /etc/creds/password; echo; echo "$USER_NAME $COLOR $POD_NAME $GREETING"; pwd; id -u; ls /etc/creds | sort | tr '\n' ' '`)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(1000)), FSGroup: ptr(int64(2000))}
	pod.Spec.Volumes = []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr(int32(0o400))}}}}
	c := &pod.Spec.Containers[0]
	c.WorkingDir = "/etc/creds"
	c.VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/etc/creds"}}
	c.Env = []corev1.EnvVar{
		{Name: "USER_NAME", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "user"}}},
		{Name: "COLOR", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "color"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "GREETING", Value: "hi-$(POD_NAME)"},
	}
	p := runPod(t, ns, pod)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s\nlogs: %s", describe(p), podLogs(t, ns, "secret", &corev1.PodLogOptions{}))
	}
	want := "s3cr3t\nocto blue secret hi-secret\n/etc/creds\n1000\npassword user "
	if got := podLogs(t, ns, "secret", &corev1.PodLogOptions{}); got != want {
		t.Errorf("logs: got %q, want %q", got, want)
	}
}

// A non-zero exit fails the pod with that exit code and the container's termination message.
func TestNonZeroExitFailsPod(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	p := runPod(t, ns, shPod("fail", `echo "disk full" > /dev/termination-log; exit 3`))
	if p.Status.Phase != corev1.PodFailed {
		t.Fatalf("pod: %s", describe(p))
	}
	term := containerStatus(t, p, "main").State.Terminated
	if term == nil || term.ExitCode != 3 || term.Reason != "Error" || term.Message != "disk full\n" {
		t.Errorf("container state: %+v, want exit code 3, reason Error, message from /dev/termination-log", term)
	}
}

// activeDeadlineSeconds ends a running pod: phase Failed, reason DeadlineExceeded, its process killed.
func TestActiveDeadline(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	pod := shPod("deadline", `sleep 3601`)
	pod.Spec.ActiveDeadlineSeconds = ptr(int64(2))
	pod.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	p := runPod(t, ns, pod)
	if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "DeadlineExceeded" {
		t.Fatalf("pod: %s, want Failed with reason DeadlineExceeded", describe(p))
	}
	if term := containerStatus(t, p, "main").State.Terminated; term == nil || term.ExitCode != 137 {
		t.Errorf("container state: %+v, want terminated by SIGKILL (137)", term)
	}
	if pids := hostProcesses("sleep", "3601"); len(pids) > 0 {
		t.Errorf("the pod's process still runs: pids %v", pids)
	}
}

// Deleting a running pod ends its processes: SIGTERM first, SIGKILL when the grace period passes.
func TestDeleteRunningPodEndsProcess(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		script   string
		grace    int64
		wantCode int32
	}{
		// The shell handles SIGTERM and exits 0 long before the grace period ends.
		{"SIGTERM handled", `trap 'exit 0' TERM; sleep 3602 & wait`, 60, 0},
		// The shell is its PID namespace's init and ignores SIGTERM: SIGKILL after 1 s.
		{"SIGTERM ignored", `sleep 3603 & wait`, 1, 137},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := kube.Namespace(t, nil)
			sleepArg := fmt.Sprint(3602 + i)
			createPod(t, ns, shPod("victim", tc.script))
			p := waitPod(t, ns, "victim", "running", running)
			err := wait.PollUntilContextTimeout(testContext(t), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
				return len(hostProcesses("sleep", sleepArg)) == 1, nil
			})
			if err != nil {
				t.Fatalf("the pod's process (sleep %s) never appeared on the host", sleepArg)
			}
			var lastState *corev1.ContainerStateTerminated
			done := make(chan struct{})
			go func() {
				defer close(done)
				watchUntilDeleted(t, ns, "victim", p.ResourceVersion, func(p *corev1.Pod) {
					if len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil {
						lastState = p.Status.ContainerStatuses[0].State.Terminated
					}
				})
			}()
			if err := kube.Client.CoreV1().Pods(ns).Delete(testContext(t), "victim", metav1.DeleteOptions{GracePeriodSeconds: &tc.grace}); err != nil {
				t.Fatal(err)
			}
			<-done
			if lastState == nil || lastState.ExitCode != tc.wantCode {
				t.Errorf("final container state before deletion: %+v, want exit code %d", lastState, tc.wantCode)
			}
			if pids := hostProcesses("sleep", sleepArg); len(pids) > 0 {
				t.Errorf("the pod is gone but its process still runs: pids %v", pids)
			}
		})
	}
}

// watchUntilDeleted calls seen for every version of the pod after resourceVersion until it is deleted.
func watchUntilDeleted(t *testing.T, ns, name, resourceVersion string, seen func(*corev1.Pod)) {
	w, err := kube.Client.CoreV1().Pods(ns).Watch(testContext(t), metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: resourceVersion,
	})
	if err != nil {
		t.Errorf("watching pod: %v", err)
		return
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok {
			seen(p)
		}
		if ev.Type == "DELETED" {
			return
		}
	}
	t.Errorf("watch of pod %s ended before it was deleted", name)
}

// A pod requesting more CPU than any node has stays Pending as Unschedulable, and runs once a big enough
// node joins.
func TestUnschedulableUntilAddNode(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	pod := shPod("big", `echo scheduled`)
	pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200")}
	createPod(t, ns, pod)
	p := waitPod(t, ns, "big", "unschedulable", func(p *corev1.Pod) (bool, error) {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true, nil
			}
		}
		return false, nil
	})
	if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
		t.Fatalf("pod: %s", describe(p))
	}
	name, err := kube.AddNode(testContext(t), cluster.NodeOptions{CPU: "256", Memory: "64Gi"})
	if err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, ns, "big", "finished", terminal)
	if p.Status.Phase != corev1.PodSucceeded || p.Spec.NodeName != name {
		t.Fatalf("pod: %s, want Succeeded on %s", describe(p), name)
	}
}

// Simulated pull failures show ErrImagePull then ImagePullBackOff (with events); invalid names show
// InvalidImageName.
func TestImageFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, image string
		reasons     []string // waiting reasons, in the order they must appear
		event       string   // a Warning event message the kubelet emits
	}{
		{"pull fails", "pull-fails.invalid/team/tools:1.0", []string{"ErrImagePull", "ImagePullBackOff"}, "Error: ImagePullBackOff"},
		{"invalid name", "Not/A:Valid Image", []string{"InvalidImageName"}, "Error: InvalidImageName"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := kube.Namespace(t, nil)
			pod := shPod("img", "true")
			pod.Spec.Containers[0].Image = tc.image
			createPod(t, ns, pod)
			next := 0
			p := waitPod(t, ns, "img", strings.Join(tc.reasons, " then "), func(p *corev1.Pod) (bool, error) {
				if len(p.Status.ContainerStatuses) == 1 {
					if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && w.Reason == tc.reasons[next] {
						next++
					}
				}
				return next == len(tc.reasons), nil
			})
			if p.Status.Phase != corev1.PodPending {
				t.Errorf("pod: %s, want Pending", describe(p))
			}
			err := wait.PollUntilContextTimeout(testContext(t), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
				evs, err := kube.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=img"})
				if err != nil {
					return false, err
				}
				for _, e := range evs.Items {
					if e.Type == corev1.EventTypeWarning && e.Message == tc.event && e.Source.Component == "kubelet" {
						return true, nil
					}
				}
				return false, nil
			})
			if err != nil {
				t.Errorf("no Warning event %q from the kubelet: %v", tc.event, err)
			}
		})
	}
}

// A batch/v1 Job with ttlSecondsAfterFinished completes, then the TTL controller deletes it and the garbage
// collector its pod.
func TestJobTTLAfterFinished(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	ctx := testContext(t)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "ttl"},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr(int32(0)),
			TTLSecondsAfterFinished: ptr(int32(1)),
			Template:                corev1.PodTemplateSpec{Spec: shPod("", "echo job done").Spec},
		},
	}
	created, err := kube.Client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Watch from the creation, not poll: every change of the Job arrives in order, so its Complete status is
	// seen even when the TTL controller deletes it sooner after than a poll under load comes round.
	w, err := kube.Client.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=ttl",
		ResourceVersion: created.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var sawComplete, deleted bool
	for !deleted {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the job to be deleted after it finished: %v", ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch of the job ended before the job was deleted")
			}
			j, isJob := ev.Object.(*batchv1.Job)
			if !isJob {
				t.Fatalf("watch event %s: %+v", ev.Type, ev.Object)
			}
			for _, c := range j.Status.Conditions {
				if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
					sawComplete = true
				}
			}
			deleted = ev.Type == watch.Deleted
		}
	}
	if !sawComplete {
		t.Errorf("the job was deleted without being seen Complete")
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := kube.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/controller-uid=" + string(created.UID)})
		return err == nil && len(pods.Items) == 0, err
	})
	if err != nil {
		t.Fatalf("the job's pod was not garbage-collected: %v", err)
	}
}

// A pod using a service account reaches the API server with in-cluster configuration (projected token,
// ca.crt, namespace, KUBERNETES_SERVICE_HOST/PORT) and is refused what its Role does not allow.
func TestServiceAccountInCluster(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	ctx := testContext(t)
	if _, err := kube.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "read-configmaps"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "probe", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.PodSpec{
			RestartPolicy:      corev1.RestartPolicyNever,
			ServiceAccountName: "probe",
			Containers: []corev1.Container{{Name: "probe", Image: probeImage,
				Command: []string{"/usr/local/bin/incluster-probe"},
				Env:     []corev1.EnvVar{{Name: inClusterProbeEnv, Value: "1"}}}},
		},
	}
	restrictedSecurity(&pod.Spec.Containers[0])
	p := runPod(t, ns, pod)
	logs := podLogs(t, ns, "probe", &corev1.PodLogOptions{})
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s\nlogs:\n%s", describe(p), logs)
	}
	want := fmt.Sprintf("as system:serviceaccount:%s:probe in %s\nlist configmaps: allowed\nlist secrets: forbidden\n", ns, ns)
	if logs != want {
		t.Errorf("probe output:\n%s\nwant:\n%s", logs, want)
	}
}

// A namespace enforcing the restricted Pod Security Standard refuses a privileged pod and runs a compliant
// one as the user it asks for.
func TestPodSecurityRestricted(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	bad := shPod("privileged", "id -u")
	bad.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
	_, err := kube.Client.CoreV1().Pods(ns).Create(testContext(t), bad, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) || !strings.Contains(err.Error(), "privileged") {
		t.Fatalf("creating a privileged pod: got %v, want Forbidden by PodSecurity restricted", err)
	}
	good := shPod("restricted", "id -u; id -G")
	restrictedSecurity(&good.Spec.Containers[0])
	good.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(3000))}
	p := runPod(t, ns, good)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s", describe(p))
	}
	if got := podLogs(t, ns, "restricted", &corev1.PodLogOptions{}); got != "1000\n1000 3000\n" {
		t.Errorf("id: got %q, want uid 1000 with group 1000 and fsGroup 3000", got)
	}
}

// Each container has a private root: image files and volume mount paths appear only inside it, writes to
// the image's files stay private, and nothing is created on the host.
func TestContainerPrivateRoot(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	pod := shPod("private", `test -x /usr/local/bin/incluster-probe && test -d /octo-e2e/data && echo mounted;
		echo private > /etc/octo-e2e-written && cat /etc/octo-e2e-written; hostname`)
	pod.Spec.Containers[0].Image = probeImage
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/octo-e2e/data"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p := runPod(t, ns, pod)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s\nlogs: %s", describe(p), podLogs(t, ns, "private", &corev1.PodLogOptions{}))
	}
	if got := podLogs(t, ns, "private", &corev1.PodLogOptions{}); got != "mounted\nprivate\nprivate\n" {
		t.Errorf("logs: got %q, want the mounts, the private write and the pod's name as hostname", got)
	}
	for _, path := range []string{"/octo-e2e", "/etc/octo-e2e-written", "/usr/local/bin/incluster-probe"} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s exists on the host (%v): the container's changes leaked", path, err)
		}
	}
}

// An image with its own root runs there: the container sees the image's root with the image's files, and
// its writes and mount points stay out of that directory.
func TestImageRoot(t *testing.T) {
	t.Parallel()
	if scratchRoot == "" {
		t.Skip("OCTO_KUBE_BIN is not set: no static binary for the scratch image (make e2e sets it)")
	}
	ns := kube.Namespace(t, nil)
	pod := shPod("scratch", "")
	c := &pod.Spec.Containers[0]
	c.Image, c.Command = scratchImage, []string{"kube-scheduler", "--version"}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p := runPod(t, ns, pod)
	logs := podLogs(t, ns, "scratch", &corev1.PodLogOptions{})
	if p.Status.Phase != corev1.PodSucceeded || logs != "Kubernetes v1.37.2\n" {
		t.Fatalf("pod: %s\nlogs: %q", describe(p), logs)
	}
	entries, err := os.ReadDir(scratchRoot)
	if err != nil || len(entries) != 0 {
		t.Errorf("the image root changed: %v %v", entries, err)
	}

	// A shell is not in that image: the container fails to start, like a missing entrypoint.
	p = runPod(t, ns, func() *corev1.Pod { p := shPod("noshell", "true"); p.Spec.Containers[0].Image = scratchImage; return p }())
	term := containerStatus(t, p, "main").State.Terminated
	if p.Status.Phase != corev1.PodFailed || term == nil || term.Reason != "StartError" || term.ExitCode != 128 || !strings.Contains(term.Message, `"sh": executable file not found`) {
		t.Errorf("pod without its command: %s", describe(p))
	}
}

// restartPolicy OnFailure restarts a failed container after the kubelet's back-off; the previous run's
// state and logs stay available.
func TestRestartOnFailure(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	pod := shPod("flaky", `if [ -e /state/ran ]; then echo second; exit 0; fi; touch /state/ran; echo first; exit 4`)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	createPod(t, ns, pod)
	sawBackOff := false
	p := waitPod(t, ns, "flaky", "finished", func(p *corev1.Pod) (bool, error) {
		if len(p.Status.ContainerStatuses) == 1 {
			if w := p.Status.ContainerStatuses[0].State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
				sawBackOff = true
			}
		}
		return terminal(p)
	})
	s := containerStatus(t, p, "main")
	if p.Status.Phase != corev1.PodSucceeded || s.RestartCount != 1 || !sawBackOff {
		t.Fatalf("pod: %s restartCount=%d sawCrashLoopBackOff=%v", describe(p), s.RestartCount, sawBackOff)
	}
	if last := s.LastTerminationState.Terminated; last == nil || last.ExitCode != 4 {
		t.Errorf("last state: %+v, want the first run's exit code 4", s.LastTerminationState)
	}
	if got := podLogs(t, ns, "flaky", &corev1.PodLogOptions{}); got != "second\n" {
		t.Errorf("logs: %q", got)
	}
	if got := podLogs(t, ns, "flaky", &corev1.PodLogOptions{Previous: true}); got != "first\n" {
		t.Errorf("previous logs: %q", got)
	}
}

// What happens when a node restarts: stopping it kills its containers; a node started again under the same
// name reports the pods the first one had started as Failed (ContainerStatusUnknown, exit code 137), and
// still deletes them when asked.
func TestNodeRestart(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	ctx := testContext(t)
	name := "restart-" + ns[len(ns)-5:]
	// Cordoned before it starts, so the scheduler puts no other test's pod on it.
	if _, err := kube.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Unschedulable: true}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	startNode := func() (stop func()) {
		n, err := kubelet.New(kubelet.Config{Name: name, Client: kube.Client, StateDir: filepath.Join(t.TempDir(), "node"),
			APIServerHost: "127.0.0.1", APIServerPort: apiPort(t), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		nctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(nctx) }()
		select {
		case <-n.Ready():
		case err := <-done:
			t.Fatalf("node: %v", err)
		}
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node stopped with %v", err)
			}
		}
	}
	stop := startNode()
	pod := shPod("survivor", "sleep 3704")
	pod.Spec.NodeName = name
	createPod(t, ns, pod)
	waitPod(t, ns, "survivor", "running", running)
	stop()
	if pids := hostProcesses("sleep", "3704"); len(pids) > 0 {
		t.Errorf("the stopped node's container still runs: pids %v", pids)
	}

	stop = startNode()
	defer stop()
	p := waitPod(t, ns, "survivor", "failed", terminal)
	term := containerStatus(t, p, "main").State.Terminated
	if p.Status.Phase != corev1.PodFailed || term == nil || term.Reason != "ContainerStatusUnknown" || term.ExitCode != 137 {
		t.Fatalf("pod after the node restarted: %s", describe(p))
	}
	// A failed pod is removed by the API server at once (no grace period for terminal pods); the node then
	// forgets it.
	if err := kube.Client.CoreV1().Pods(ns).Delete(ctx, "survivor", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	watchUntilDeleted(t, ns, "survivor", p.ResourceVersion, func(*corev1.Pod) {})
}

// apiPort is the API server's port, for nodes a test starts itself.
func apiPort(t *testing.T) int {
	u, err := url.Parse(kube.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return port
}
