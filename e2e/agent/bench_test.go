package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/jobrunner"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// The benchmarks of the worker, each reporting the figures as custom metrics. They share the package's
// cluster; run them alone: go test ./e2e/agent/ -run '^$' -bench . -benchtime 1x (scripts/bench-agent.sh).

// BenchmarkOperationOverhead: submit → result of `exit 0` through the worker, against a bare client-go
// program that creates the same Secret and Job and waits for the Job to complete. Goal: within 1.2x.
func BenchmarkOperationOverhead(b *testing.B) {
	e := setup(b, agentOptions{})
	v := chartgen.Defaults()
	v.Worker.Name, v.Worker.Pools = "bare", []string{pool}
	cfg, err := jobrunner.ConfigFrom(v, jobrunner.Env{Namespace: e.ns, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	cfg.WorkerImage, cfg.ToolsImage = workerImage, toolsImage
	const rounds = 10
	var bare, worker time.Duration
	// Warm up both paths once (the first pod on a node pays for page cache).
	bareJob(b, cfg, "warm")
	e.wait(e.submit(api.OperationSpec{Script: "exit 0"}))
	b.ResetTimer()
	for i := 0; i < b.N*rounds; i++ {
		start := time.Now()
		bareJob(b, cfg, fmt.Sprintf("bare-%d-%d", b.N, i))
		bare += time.Since(start)
		start = time.Now()
		op := e.wait(e.submit(api.OperationSpec{Script: "exit 0"}))
		worker += time.Since(start)
		if op.State != api.StateSucceeded {
			b.Fatalf("state %s: %s", op.State, op.Message)
		}
	}
	n := float64(b.N * rounds)
	b.ReportMetric(bare.Seconds()/n, "bare-s/op")
	b.ReportMetric(worker.Seconds()/n, "worker-s/op")
	b.ReportMetric(worker.Seconds()/bare.Seconds(), "worker/bare")
}

// bareJob creates the Secret and Job the worker would create for an `exit 0` step and waits for the Job to
// complete, with a watch: the least a program can do to run a script as a Job.
func bareJob(b *testing.B, cfg jobrunner.Config, id string) {
	ctx := context.Background()
	key, _ := logline.NewKey()
	lease := &api.Lease{LeaseID: id, Operation: api.Operation{ID: id, OperationSpec: api.OperationSpec{Pool: pool, Script: "exit 0"}}}
	sec, err := cfg.BuildSecret("bare", lease, key)
	if err != nil {
		b.Fatal(err)
	}
	job := cfg.BuildJob("bare", lease, cfg.Requests)
	w, err := kube.Client.BatchV1().Jobs(cfg.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", job.Name).String()})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	if _, err := kube.Client.CoreV1().Secrets(cfg.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := kube.Client.BatchV1().Jobs(cfg.Namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				b.Fatal("watch closed")
			}
			if j, ok := ev.Object.(*batchv1.Job); ok && ev.Type != watch.Deleted {
				for _, c := range j.Status.Conditions {
					if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
						return
					}
					if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
						b.Fatalf("bare Job failed: %s", c.Message)
					}
				}
			}
		case <-timeout:
			b.Fatal("bare Job did not complete in 2 minutes")
		}
	}
}

// BenchmarkLogThroughput: lines per second the server stores for a 200,000-line script (its contiguous
// last_seq, polled from the database: first poll that saw lines to the one that saw all), against raw GetLogs
// streaming of the same pod's log (read once the pod has finished; the best of three reads). Goal: at least
// 0.8. Two ways:
//
//   - live (worker/raw): the worker follows the pod while it runs, as it normally does. No reader can see
//     lines faster than the pod writes them: runner-lines/s (the script's lines as the runner stamped them)
//     bounds it, and runner/raw is that ceiling as a ratio.
//   - catch-up (catchup/raw): the worker is stopped (SIGTERM) once the operation's Job exists and started
//     again after the pod finished, so it delivers the finished log as a worker that restarts does; this
//     reads the same finished log raw GetLogs reads.
//
// The pods run on a node of their own that does not rotate logs: a 200,000-line log (25 MB) outgrows the
// kubelet's default 10 MiB, and raw GetLogs, which reads only the current file, would read part of the log
// or none of it. The pods' own channel (they push what the server lacks once its log stands still for 5 s)
// would deliver the whole catch-up log while the worker is stopped, so for these two phases the benchmark
// points it at a closed port (benchValues): the pods still spool their records, as in production, but only
// the worker delivers them.
// A third phase measures that channel alone:
//
//   - push (push/raw): the worker is stopped once the operation's Job exists, with the pods' channel working;
//     the pod pushes its finished log to the server itself (PROTOCOL.md, "The script pod's channel").
//
// server-append-lines/s is the server alone storing the same number of lines from a plain client. Each phase
// also logs the CPU each process spent per line (kube-apiserver, the process node with this process's
// readers, the pods, the agent, the dispatch server), and reports the totals (*-cpu-ns/line); with
// OCTO_BENCH_PROFILE=DIR it writes pprof CPU profiles there (see benchProfile).
func BenchmarkLogThroughput(b *testing.B) {
	prof := benchProfile(b)
	node, err := kube.AddNode(context.Background(), cluster.NodeOptions{ContainerLogMaxSize: "-1"})
	if err != nil {
		b.Fatal(err)
	}
	e := setup(b, agentOptions{values: benchValues(node, false)})
	const n = 200000
	var live, catchup, push, raw, rawCatchup, rawPush, runner float64
	var liveCPU, catchupCPU, pushCPU, rawCPU float64
	// phase logs and returns the CPU per line the processes spent since s0.
	phase := func(name string, lines int, s0 cpuSample, m *cpuMeter) float64 {
		costs, total := perLine(s0, m.sample(b), lines)
		b.Logf("%s: %s (pids %v)", name, formatCosts(costs, total), m.pids)
		return total
	}
	for i := 0; i < b.N; i++ {
		m := newCPUMeter(b, e)
		var s0 cpuSample
		var stop func()
		startPhase := func(name string) func() {
			return func() { s0, stop = m.sample(b), profilePhase(b, prof, name) }
		}
		id := e.submit(api.OperationSpec{Script: fmt.Sprintf("seq 1 %d", n)})
		r := <-e.storedRate(id, n, startPhase("live"))
		// The runner's CPU is counted once its process is reaped, when the pod ends.
		waitUntil(b, time.Minute, "the live operation finished", func() bool { return e.get(id).State.Terminal() })
		stop()
		live += r.rate
		liveCPU += phase("live", int(r.lines), s0, m)
		runner += e.checkStored(id, n)
		rate, cpu := rawGetLogs(b, e.pod(id), m, prof)
		raw, rawCPU = raw+rate, rawCPU+cpu

		// Catch-up: the pod runs and finishes while no worker follows it.
		id = e.submit(api.OperationSpec{Script: fmt.Sprintf("sleep 3; seq 1 %d", n)})
		waitUntil(b, time.Minute, "the catch-up operation running", func() bool { return e.get(id).State == api.StateRunning })
		e.agent.Stop(syscall.SIGTERM, 20*time.Second)
		for _, l := range e.logs(id) {
			if l.Seq > 0 {
				b.Fatalf("the pod printed line %d before the worker stopped: lengthen its sleep", l.Seq)
			}
		}
		waitUntil(b, 2*time.Minute, "the catch-up pod finished", func() bool {
			pods, err := kube.Client.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: jobrunner.LabelOperation + "=" + jobrunner.LabelValue(id)})
			return err == nil && len(pods.Items) == 1 && pods.Items[0].Status.Phase == corev1.PodSucceeded
		})
		e.launchAgent()
		m.pids["agent"] = e.agent.Pid()
		storedC := e.storedRate(id, n, startPhase("catchup")) // before the new agent can store a line
		e.agent.WaitHTTP(b, fmt.Sprintf("http://127.0.0.1:%d/readyz", e.healthPort), 2*time.Minute)
		r = <-storedC
		stop()
		catchup += r.rate
		catchupCPU += phase("catch-up", int(r.lines), s0, m)
		e.checkStored(id, n)
		rate, _ = rawGetLogs(b, e.pod(id), m, "")
		rawCatchup += rate

		// Push: the pod delivers its log over its own channel while no worker runs.
		e.agent.Stop(syscall.SIGTERM, 20*time.Second)
		e.agentOpts.values = benchValues(node, true)
		e.launchAgent()
		e.agent.WaitHTTP(b, fmt.Sprintf("http://127.0.0.1:%d/readyz", e.healthPort), 2*time.Minute)
		id = e.submit(api.OperationSpec{Script: fmt.Sprintf("sleep 3; seq 1 %d", n)})
		waitUntil(b, time.Minute, "the push operation running", func() bool { return e.get(id).State == api.StateRunning })
		e.agent.Stop(syscall.SIGTERM, 20*time.Second)
		delete(m.pids, "agent") // stopped: its CPU cannot be sampled
		r = <-e.storedRate(id, n, startPhase("push"))
		stop()
		push += r.rate
		pushCPU += phase("push", int(r.lines), s0, m)
		e.agentOpts.values = benchValues(node, false) // the worker comes back to end the operation
		e.launchAgent()
		m.pids["agent"] = e.agent.Pid()
		e.checkStored(id, n)
		rate, _ = rawGetLogs(b, e.pod(id), m, "")
		rawPush += rate
	}
	N := float64(b.N)
	server := serverCeiling(b, e, n)
	b.ReportMetric(runner/N, "runner-lines/s")
	b.ReportMetric(server, "server-append-lines/s")
	b.ReportMetric(live/N, "worker-lines/s")
	b.ReportMetric(catchup/N, "catchup-lines/s")
	b.ReportMetric(raw/N, "raw-getlogs-lines/s")
	b.ReportMetric(runner/raw, "runner/raw")
	b.ReportMetric(live/raw, "worker/raw")
	b.ReportMetric(live/runner, "worker/runner")
	b.ReportMetric(catchup/rawCatchup, "catchup/raw")
	b.ReportMetric(push/N, "push-lines/s")
	b.ReportMetric(push/rawPush, "push/raw")
	b.ReportMetric(pushCPU/N, "push-cpu-ns/line")
	b.ReportMetric(live/N/server, "worker/server")
	b.ReportMetric(rawCPU/N, "raw-cpu-ns/line")
	b.ReportMetric(liveCPU/N, "live-cpu-ns/line")
	b.ReportMetric(catchupCPU/N, "catchup-cpu-ns/line")
}

// benchValues put BenchmarkLogThroughput's pods on node and, unless push, point their channel at a closed
// port of the loopback: the live and catch-up phases measure the worker's delivery, not the pod's pushes.
func benchValues(node string, push bool) string {
	v := "scriptPods:\n  nodeSelector:\n    kubernetes.io/hostname: " + node + "\n"
	if !push {
		v += "  dispatchURL: http://127.0.0.1:1\n"
	}
	return v
}

// rawGetLogs reads a finished pod's script container log with GetLogs (timestamps on, as the worker reads it)
// three times and returns the best rate in lines per second (the machine is shared, and the best read is the
// hardest baseline) and the CPU the processes spent per line read.
func rawGetLogs(b *testing.B, pod *corev1.Pod, m *cpuMeter, prof string) (float64, float64) {
	best, lines := 0.0, 0
	s0, stop := m.sample(b), profilePhase(b, prof, "raw")
	for range 3 {
		r, n := rawGetLogsOnce(b, pod)
		best, lines = max(best, r), lines+n
	}
	stop()
	costs, total := perLine(s0, m.sample(b), lines)
	b.Logf("raw GetLogs: %s", formatCosts(costs, total))
	return best, total
}

func rawGetLogsOnce(b *testing.B, pod *corev1.Pod) (float64, int) {
	start := time.Now()
	rc, err := kube.Client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: jobrunner.ScriptContainerName, Timestamps: true}).Stream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return float64(lines) / time.Since(start).Seconds(), lines
}

// serverCeiling measures how fast the same dispatch server stores n lines sent straight from a client in
// 5,000-line batches, one after another (no pod, no worker): the most a single operation's log can reach.
func serverCeiling(b *testing.B, e *env, n int) float64 {
	ctx := context.Background()
	if _, err := e.admin.CreatePool(ctx, "ceiling", "bench"); err != nil {
		b.Fatal(err)
	}
	tok, err := e.admin.CreateToken(ctx, []string{"ceiling"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	rc, err := client.New(client.Config{Server: e.serverURL(), Token: tok.Token})
	if err != nil {
		b.Fatal(err)
	}
	reg, err := rc.Register(ctx, api.RegisterRequest{Name: "ceiling", Version: "1.0.0", Pools: []string{"ceiling"}, Capacity: 1})
	if err != nil {
		b.Fatal(err)
	}
	wc := rc.WithToken(reg.WorkerToken)
	op, err := e.admin.Submit(ctx, api.OperationSpec{Pool: "ceiling", Script: "true"})
	if err != nil {
		b.Fatal(err)
	}
	lease, err := wc.Lease(ctx, 5*time.Second)
	if err != nil || lease == nil {
		b.Fatalf("leasing the ceiling operation: %v", err)
	}
	start := time.Now()
	for seq := 0; seq < n; {
		lines := make([]api.LogLine, 0, 5000)
		for len(lines) < 5000 && seq < n {
			seq++
			lines = append(lines, api.LogLine{Seq: int64(seq), Time: time.Now(), Stream: api.StreamStdout, Text: fmt.Sprint(seq)})
		}
		if _, err := wc.AppendLogs(ctx, op.ID, lease.LeaseID, lines); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkIdleWorker: RSS and CPU of an agent with nothing to do, and its Kubernetes API requests per minute,
// over OCTO_BENCH_IDLE (default 5m). Goals: under 30 MiB RSS, under 1% of a core. RSS is also split into its
// anonymous part (the agent's own heap and stacks) and its file-backed part (pages of the mapped ~70 MB static
// binary). The baseline, run in the same benchmark, is the same agent keeping the binary pages that only its
// start-up touched (--release-startup-pages=false).
func BenchmarkIdleWorker(b *testing.B) {
	window := 5 * time.Minute
	if s := os.Getenv("OCTO_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("OCTO_BENCH_IDLE: %v", err)
		}
		window = d
	}
	b.Run("startup-pages=released", func(b *testing.B) { idleWorker(b, window, agentOptions{ownBinary: true}) })
	b.Run("startup-pages=kept", func(b *testing.B) {
		idleWorker(b, window, agentOptions{ownBinary: true, flags: []string{"--release-startup-pages=false"}})
	})
}

func idleWorker(b *testing.B, window time.Duration, o agentOptions) {
	e := setup(b, o)
	pid := e.agent.Pid()
	time.Sleep(5 * time.Second) // let start-up settle (informer lists, registration)
	_, cpu0, err := procStats(pid)
	if err != nil {
		b.Fatal(err)
	}
	req0 := metric(b, e.metricsURL(), "octo_worker_kube_requests_total")
	stop := make(chan struct{})
	peak := peakRSS(pid, stop)
	time.Sleep(window)
	close(stop)
	rss, cpu1, err := procStats(pid)
	if err != nil {
		b.Fatal(err)
	}
	req1 := metric(b, e.metricsURL(), "octo_worker_kube_requests_total")
	anon, file, err := rssParts(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(anon)/(1<<20), "rss-anon-MiB")
	b.ReportMetric(float64(file)/(1<<20), "rss-file-MiB")
	b.ReportMetric(float64(<-peak)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(100*(cpu1-cpu0).Seconds()/window.Seconds(), "cpu-%core")
	b.ReportMetric((req1-req0)/window.Minutes(), "kube-requests/min")
}

// manyOpsValues make a worker for 200 operations at once: small requests, so they all fit the process node,
// and a short TTL, so finished Jobs do not pile up.
const manyOpsValues = `
worker:
  concurrency: 200
scriptPods:
  ttlSecondsAfterFinished: 5
  resources:
    requests: {cpu: 10m, memory: 16Mi}
`

// BenchmarkConcurrent200: 200 operations at once on one worker: wall time, peak worker RSS and Kubernetes API
// requests per operation, against one operation alone on the same worker.
func BenchmarkConcurrent200(b *testing.B) {
	e := setup(b, agentOptions{values: manyOpsValues})
	run := func(n int) (time.Duration, float64) {
		before := metric(b, e.metricsURL(), "octo_worker_kube_requests_total")
		start := time.Now()
		ids := make([]string, n)
		for i := range ids {
			ids[i] = e.submit(api.OperationSpec{Script: fmt.Sprintf("echo operation %d; sleep 2; echo done", i)})
		}
		for _, id := range ids {
			if op := e.waitFor(id, 15*time.Minute); op.State != api.StateSucceeded {
				b.Fatalf("%s: %s", op.State, op.Message)
			}
		}
		return time.Since(start), (metric(b, e.metricsURL(), "octo_worker_kube_requests_total") - before) / float64(n)
	}
	one, oneReq := run(1)
	stop := make(chan struct{})
	peak := peakRSS(e.agent.Pid(), stop)
	all, allReq := run(200)
	close(stop)
	b.ReportMetric(one.Seconds(), "one-op-s")
	b.ReportMetric(all.Seconds(), "200-ops-s")
	b.ReportMetric(all.Seconds()/one.Seconds(), "200/one-wall")
	b.ReportMetric(float64(<-peak)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(oneReq, "kube-req/op-alone")
	b.ReportMetric(allReq, "kube-req/op-200")
}
