package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/e2e/cluster"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// A node that rotates container logs like a kubelet, at 1Mi x 3: a pod writes about 5 MB of numbered
// lines, and GetLogs returns only the current file, so the first lines are gone. This is what a reader of
// pod logs meets on a real cluster when a step prints more than the kubelet keeps in its current file.
func TestLogRotation(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	node, err := kube.AddNode(testContext(t), cluster.NodeOptions{
		ContainerLogMaxSize: "1Mi", ContainerLogMaxFiles: 3, ContainerLogMonitorInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	const lines = 50000 // of 100 bytes
	sync := t.TempDir()
	// The container waits for the test to see a rotated file before its last line, so that a rotation has
	// happened while it ran, whatever the speed of the machine.
	pod := shPod("rotating", fmt.Sprintf(`pad=%s; i=1; while [ $i -le %d ]; do printf 'line %%06d %%s\n' $i "$pad"; i=$((i+1)); done
while [ ! -e /sync/go ]; do sleep 0.05; done; echo end`, strings.Repeat("x", 87), lines))
	pod.Spec.NodeName = node
	pod.Spec.Volumes = []corev1.Volume{{Name: "sync", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: sync}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "sync", MountPath: "/sync"}}
	created := createPod(t, ns, pod)

	logDir := filepath.Join(kube.Dir, "nodes", node, "pods", string(created.UID), "logs")
	var files []string
	err = wait.PollUntilContextTimeout(testContext(t), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		files, err = filepath.Glob(filepath.Join(logDir, "main-0.log.*"))
		return len(files) > 0, err
	})
	if err != nil {
		t.Fatalf("no rotated log file in %s: %v", logDir, err)
	}
	if err := os.WriteFile(filepath.Join(sync, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := waitPod(t, ns, "rotating", "finished", terminal); p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod: %s", describe(p))
	}

	// The log is the end of the numbered lines (possibly none of them, when the current file was rotated
	// just before "end") and "end", in order, without line 1.
	got := strings.Split(strings.TrimSuffix(podLogs(t, ns, "rotating", &corev1.PodLogOptions{}), "\n"), "\n")
	if got[len(got)-1] != "end" {
		t.Fatalf("log ends with %q, want end", got[len(got)-1])
	}
	numbered := got[:len(got)-1]
	for i, l := range numbered {
		want := lines - len(numbered) + 1 + i
		if f := strings.Fields(l); len(f) != 3 || f[1] != fmt.Sprintf("%06d", want) {
			t.Fatalf("line %d of the log is %.20q..., want line %d of the container's output", i, l, want)
		}
	}
	if len(numbered) == lines {
		t.Fatal("GetLogs returned every line: the node did not rotate")
	}
	t.Logf("GetLogs returned the last %d of %d lines", len(numbered), lines)

	files, err = filepath.Glob(filepath.Join(logDir, "main-0.log*"))
	if err != nil || len(files) > 3 {
		t.Errorf("log files %v (%v), want at most 3", files, err)
	}
}
