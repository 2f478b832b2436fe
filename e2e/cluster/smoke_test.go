package cluster_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	inClusterProbeEnv = "OCTO_E2E_INCLUSTER_PROBE"
	probeImage        = "incluster-probe:test"
)

func inClusterProbe() int { return 0 }

func TestSmoke(t *testing.T) {
	ns := kube.Namespace(t, nil)
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hello"}, Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sh", "-c", "echo hello; id; hostname; ls /var/run/secrets/kubernetes.io/serviceaccount; env | grep KUBE"}}}}}
	if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		p, err := kube.Client.CoreV1().Pods(ns).Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s %v", p.Status.Phase, p.Status.ContainerStatuses)
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			b, err := kube.Client.CoreV1().Pods(ns).GetLogs("hello", &corev1.PodLogOptions{Timestamps: true}).DoRaw(ctx)
			t.Logf("logs: %s %v", b, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
