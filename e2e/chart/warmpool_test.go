package chart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// The warm pool's tests use small nodes of their own: 1 CPU, tainted with roomTaint so that only the pods that
// tolerate it (script pods, placeholders, fillers) run there. Script pods request roomCPU, so each node has
// room for exactly two of them.
const (
	roomTaint    = "octo-e2e/room"
	roomCPU      = "400m"
	placeholders = "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/component=warm-pool"
)

// roomNode starts a process node named name, with room for two script pods, tainted with roomTaint.
func roomNode(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kube.AddNode(ctx, cluster.NodeOptions{Name: name, CPU: "1", Memory: "4Gi"}); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: roomTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule})
		_, err = kube.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("tainting node %s: %v", name, err)
	}
}

// nodeName returns a node name no other test uses.
func nodeName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

// roomSets are the values that send script pods (and so the placeholders) to the given nodes only, tolerating
// roomTaint, each requesting roomCPU; warm adds a warm pool of two placeholders with the chart's PriorityClass.
func roomSets(warm bool, nodes ...string) []string {
	term := "scriptPods.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]."
	s := []string{term + "key=kubernetes.io/hostname", term + "operator=In", term + "values={" + strings.Join(nodes, ",") + "}",
		"scriptPods.tolerations[0].key=" + roomTaint, "scriptPods.tolerations[0].operator=Exists",
		"scriptPods.resources.requests.cpu=" + roomCPU}
	if warm {
		s = append(s, "scriptPods.warmPool.enabled=true", "scriptPods.warmPool.replicas=2", "scriptPods.warmPool.createPriorityClass=true")
	}
	return s
}

// deleteWarmPoolClass deletes the cluster-scoped objects of the release in ns when the test ends (deleting
// the namespace leaves them).
func deleteWarmPoolClass(t *testing.T, ns string) {
	t.Cleanup(func() {
		ctx := context.Background()
		name := ns + "-" + releaseName + "-octo-worker-warm-pool"
		_ = kube.Client.SchedulingV1().PriorityClasses().Delete(ctx, name, metav1.DeleteOptions{})
		_ = kube.Client.RbacV1().ClusterRoleBindings().Delete(ctx, name+"-read", metav1.DeleteOptions{})
		_ = kube.Client.RbacV1().ClusterRoles().Delete(ctx, name+"-read", metav1.DeleteOptions{})
	})
}

// podStates lists the pods matching selector in ns, and describes them for messages.
func podStates(t *testing.T, ns, selector string) ([]corev1.Pod, string) {
	t.Helper()
	pods, err := kube.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "%s:%s@%s", p.Name, p.Status.Phase, p.Spec.NodeName)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
				fmt.Fprintf(&b, "(%s: %s)", c.Reason, c.Message)
			}
		}
		b.WriteString(" ")
	}
	return pods.Items, b.String()
}

// runningOn returns the names of the pods running on node (and not being deleted).
func runningOn(pods []corev1.Pod, node string) map[string]bool {
	out := map[string]bool{}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Spec.NodeName == node {
			out[p.Name] = true
		}
	}
	return out
}

// unschedulable counts the pods the scheduler found no room for.
func unschedulable(pods []corev1.Pod) int {
	n := 0
	for _, p := range pods {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				n++
			}
		}
	}
	return n
}

// waitPlaceholders waits until both placeholders run on node and returns their names.
func waitPlaceholders(t *testing.T, ns, node string) map[string]bool {
	t.Helper()
	var names map[string]bool
	waitFor(t, 6*time.Minute, "two placeholders running on "+node, func() (bool, string) {
		pods, state := podStates(t, ns, placeholders)
		names = runningOn(pods, node)
		return len(names) == 2, state
	})
	return names
}

// With scriptPods.warmPool on, two placeholders hold a node's room for two script pods (nothing else fits
// there); two operations' script pods preempt them and run on that node; the Deployment's replacements wait
// for room (what a cluster autoscaler acts on), and take the room back when the operations end. The namespace
// enforces Pod Security "restricted", so the placeholders pass it.
func TestWarmPoolPlaceholdersYieldToScriptPods(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, restricted)
	node := nodeName("warm")
	roomNode(t, node)
	d := startDispatch(t)
	deleteWarmPoolClass(t, ns)
	installWorker(t, ns, d, roomSets(true, node)...)
	first := waitPlaceholders(t, ns, node)

	g := newGate(t)
	ids := []string{d.submit(t, "warm-1", gatedScript("warm-1", g)), d.submit(t, "warm-2", gatedScript("warm-2", g))}
	waitFor(t, 3*time.Minute, "both script pods running on "+node+", the first placeholders gone and their replacements unschedulable", func() (bool, string) {
		scripts, s1 := podStates(t, ns, jobrunner.LabelOperation)
		held, s2 := podStates(t, ns, placeholders)
		gone := true
		for _, p := range held {
			gone = gone && !first[p.Name]
		}
		return len(runningOn(scripts, node)) == 2 && gone && unschedulable(held) == 2, "script pods: " + s1 + "; placeholders: " + s2
	})
	g.open(t)
	for _, id := range ids {
		if op := d.waitOp(t, id, 3*time.Minute); op.State != api.StateSucceeded {
			t.Errorf("operation %s: %s (%s), want succeeded", id, op.State, op.Message)
		}
	}
	waitPlaceholders(t, ns, node)
}

// roundOfTwo submits two operations at once and returns, for each, the time from its submission to its
// script's first line (the script pod running).
func roundOfTwo(t *testing.T, d *dispatchServer, name string, between func()) []time.Duration {
	t.Helper()
	var starts []time.Time
	var ids []string
	for i := range 2 {
		starts = append(starts, time.Now())
		ids = append(ids, d.submit(t, fmt.Sprintf("%s-%d", name, i), "echo started"))
	}
	if between != nil {
		between()
	}
	var out []time.Duration
	for i, id := range ids {
		if op := d.waitOp(t, id, 6*time.Minute); op.State != api.StateSucceeded {
			t.Fatalf("operation %s: %s (%s)", id, op.State, op.Message)
		}
		lines, log := d.scriptLines(t, id)
		if len(lines) == 0 {
			t.Fatalf("operation %s logged no script line:\n%s", id, log)
		}
		out = append(out, lines[0].Time.Sub(starts[i]))
	}
	return out
}

// filler is a pod at the script pods' priority (0) that takes the room of one script pod on node.
func filler(node string, i int) *corev1.Pod {
	yes, no := true, false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("filler-%d", i)},
		Spec: corev1.PodSpec{
			NodeSelector:    map[string]string{"kubernetes.io/hostname": node},
			Tolerations:     []corev1.Toleration{{Key: roomTaint, Operator: corev1.TolerationOpExists}},
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: ptr(int64(65534)), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "filler", Image: imageRepo + ":" + versionA, Command: []string{"/usr/local/bin/octo-worker", "pause"},
				Resources:       corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(roomCPU)}},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

// Submit → running (the script's first line) of two operations at once, on a node with room for two script
// pods: (free) the node empty; (warm) the room held by two placeholders, which the script pods preempt; (full)
// the node full of pods at the script pods' priority, with a second node added the moment the scheduler
// reports both script pods unschedulable, as an instant cluster autoscaler would. A measurement, not a check:
// run it with scripts/bench-warmpool.sh.
func TestWarmPoolMeasureSubmitToRunning(t *testing.T) {
	if os.Getenv("OCTO_MEASURE_WARM_POOL") == "" {
		t.Skip("a measurement: set OCTO_MEASURE_WARM_POOL=1 (scripts/bench-warmpool.sh)")
	}
	const rounds = 3
	figures := map[string][]time.Duration{}

	// Without a warm pool.
	ns := kube.Namespace(t, restricted)
	node, extra := nodeName("cold"), nodeName("added")
	roomNode(t, node)
	d := startDispatch(t)
	installWorker(t, ns, d, roomSets(false, node, extra)...)
	d.waitOp(t, d.submit(t, "warm-up", "echo started"), 3*time.Minute) // the first pod on a node pays for page cache
	for r := range rounds {
		figures["free"] = append(figures["free"], roundOfTwo(t, d, fmt.Sprintf("free-%d", r), nil)...)
	}
	for i := range 2 {
		if _, err := kube.Client.CoreV1().Pods(ns).Create(context.Background(), filler(node, i), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "two fillers running", func() (bool, string) {
		pods, s := podStates(t, ns, "")
		return len(runningOn(pods, node)) >= 2, s
	})
	var untilUnschedulable []time.Duration
	start := time.Now()
	figures["full, node added at once"] = roundOfTwo(t, d, "full", func() {
		pollFor(t, 2*time.Minute, 50*time.Millisecond, "both script pods unschedulable", func() (bool, string) {
			pods, s := podStates(t, ns, jobrunner.LabelOperation)
			return unschedulable(pods) == 2, s
		})
		untilUnschedulable = append(untilUnschedulable, time.Since(start))
		added := time.Now()
		roomNode(t, extra)
		untilUnschedulable = append(untilUnschedulable, time.Since(added))
	})

	// With a warm pool of two placeholders.
	wns := kube.Namespace(t, restricted)
	wnode := nodeName("warm")
	roomNode(t, wnode)
	wd := startDispatch(t)
	deleteWarmPoolClass(t, wns)
	installWorker(t, wns, wd, roomSets(true, wnode)...)
	wd.waitOp(t, wd.submit(t, "warm-up", "echo started"), 3*time.Minute)
	for r := range rounds {
		waitPlaceholders(t, wns, wnode)
		figures["warm"] = append(figures["warm"], roundOfTwo(t, wd, fmt.Sprintf("warm-%d", r), nil)...)
	}

	for _, k := range []string{"free", "warm", "full, node added at once"} {
		var sum time.Duration
		for _, f := range figures[k] {
			sum += f
		}
		t.Logf("submit → running, %-26s mean %6s over %d operations: %v", k+":", (sum / time.Duration(len(figures[k]))).Round(time.Millisecond), len(figures[k]), figures[k])
	}
	t.Logf("full: both script pods unschedulable after %s; adding the node took %s", untilUnschedulable[0].Round(time.Millisecond), untilUnschedulable[1].Round(time.Millisecond))
}
