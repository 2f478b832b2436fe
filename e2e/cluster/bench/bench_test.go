// Package bench measures the local control plane: warm start to a cluster where a pod has run, and the
// memory of the idle control plane. Run it with scripts/bench-cluster.sh (or go test -bench . -benchtime 3x).
package bench

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// BenchmarkWarmStart times cluster.Start plus one pod run to completion (the binaries are already built).
// The baseline, measured in the same run, is the time until etcd and kube-apiserver alone were ready;
// "x-apiserver" is the whole against it. After the first iteration it lets the cluster idle and reports
// the resident memory of the control plane's processes.
func BenchmarkWarmStart(b *testing.B) {
	var apiserver, ready, total time.Duration
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		start := time.Now()
		c, err := cluster.Start(ctx, cluster.Options{})
		if err != nil {
			b.Fatal(err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "bench"},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"true"}}}},
		}
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := c.Client.CoreV1().Pods("default").Get(ctx, "bench", metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodSucceeded, err
		})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		apiserver += c.Timings.APIServerReady
		ready += c.Timings.Ready
		if i == 0 {
			b.StopTimer()
			idle := 15 * time.Second
			time.Sleep(idle) // let the controllers settle: this measures idle memory, not a condition
			rss := childrenRSS(b)
			var sum int64
			for name, kb := range rss {
				b.ReportMetric(float64(kb)/1024, "MB-rss-"+name)
				sum += kb
			}
			b.ReportMetric(float64(sum)/1024, "MB-rss-control-plane")
			b.ReportMetric(float64(selfRSS(b))/1024, "MB-rss-bench-process-with-node")
			b.StartTimer()
		}
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
	n := float64(b.N)
	b.ReportMetric(apiserver.Seconds()/n, "s-apiserver-ready")
	b.ReportMetric(ready.Seconds()/n, "s-cluster-ready")
	b.ReportMetric(total.Seconds()/n, "s-pod-succeeded")
	b.ReportMetric(total.Seconds()/apiserver.Seconds(), "x-apiserver")
}

// childrenRSS returns the resident memory (KiB) of this process's children, by program name.
func childrenRSS(b *testing.B) map[string]int64 {
	self := strconv.Itoa(os.Getpid())
	out := map[string]int64{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		st := status(filepath.Join("/proc", e.Name(), "status"))
		if st["PPid"] == self {
			out[st["Name"]] += rssKB(st)
		}
	}
	return out
}

func selfRSS(b *testing.B) int64 { return rssKB(status("/proc/self/status")) }

func status(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func rssKB(st map[string]string) int64 {
	kb, _ := strconv.ParseInt(strings.TrimSuffix(st["VmRSS"], " kB"), 10, 64)
	return kb
}
