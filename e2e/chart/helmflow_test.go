package chart

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/e2e/proc"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// helmCannotSee lists the broken values files that no part of a chart can refuse, and why: helm reads them
// before any schema, template or hook sees the values. chartgen validate refuses them (TestBrokenCorpus).
var helmCannotSee = map[string]string{
	"duplicate-key.yaml": "helm's YAML reader keeps the last of duplicate keys without a word",
}

// Every broken values file that chartgen validate refuses, the upstream helm refuses too, naming the same
// value path: `helm template` (the schema and the templates' fail) where it can, otherwise `helm upgrade
// --install`, whose values-check hook runs chartgen's validator on the release's values before anything is
// created.
func TestHelmRefusesBrokenValues(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../chartgen/testdata/broken/*.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("the broken corpus: %d files (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			want := wantPaths(t, f)
			out, errOut, err := cluster.RunTool(t, nil, "helm", "template", "ow", chartDir, "--namespace", "deploy", "-f", f)
			if why, ok := helmCannotSee[filepath.Base(f)]; ok {
				if err != nil {
					t.Fatalf("helm now refuses %s (%v): remove it from helmCannotSee\n%s", f, err, errOut)
				}
				t.Logf("helm accepts it: %s", why)
				return
			}
			how := "helm template"
			if err == nil {
				// Only the hook can tell: install it for real, in a namespace of its own.
				how = "helm upgrade --install"
				ns := kube.Namespace(t, restricted)
				out, errOut, err = kube.RunTool(t, "helm", "upgrade", "--install", "ow", chartDir, "--namespace", ns,
					"-f", f, "--set", "image.repository="+imageRepo, "--timeout", "2m")
				if err == nil {
					t.Fatalf("helm upgrade --install accepted %s:\n%s", f, out)
				}
				assertNothingInstalled(t, ns)
			}
			// helm stops at the first problem it finds, so it names one of the file's problems.
			named := false
			for _, p := range want {
				named = named || mentionsPath(errOut, p)
			}
			if !named {
				t.Errorf("%s refused %s without naming any of %q:\n%s", how, filepath.Base(f), want, errOut)
			}
		})
	}
}

// mentionsPath reports whether helm's output names a value path, as chartgen writes it (a.b[1].c) or as
// helm's schema check does (at '/a/b/1/c', or for a key that is not allowed, at '/a/b': additional
// properties 'c').
func mentionsPath(out, path string) bool {
	if path == "" {
		return true
	}
	pointer := "/" + strings.NewReplacer(".", "/", "[", "/", "]", "").Replace(path)
	parent, key := pointer[:strings.LastIndex(pointer, "/")], pointer[strings.LastIndex(pointer, "/")+1:]
	return strings.Contains(out, path+":") || strings.Contains(out, "'"+pointer+"'") ||
		strings.Contains(out, "'"+parent+"': additional properties '"+key+"'")
}

// wantPaths reads the "# want: <path>" lines of a broken values file.
func wantPaths(t *testing.T, file string) []string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var want []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "# want:"); ok {
			want = append(want, strings.TrimSpace(p))
		}
	}
	sort.Strings(want)
	return want
}

// assertNothingInstalled checks that a refused install created no worker: no Deployment, ConfigMap or Role.
func assertNothingInstalled(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	deps, err := kube.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cms, err := kube.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=ow"})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) > 0 || len(cms.Items) > 0 {
		t.Errorf("a refused install left %d Deployment(s) and %d ConfigMap(s) in %s", len(deps.Items), len(cms.Items), ns)
	}
}

// runPrinted runs a command line that `octo-worker install` printed, as a user pasting it would: the shell
// splits it into words, and the first word must be helm, which runs with the cluster's kubeconfig.
func runPrinted(t *testing.T, line string) (string, string, error) {
	t.Helper()
	out, err := exec.Command("bash", "-c", `f() { printf '%s\0' "$@"; }; f `+line).Output()
	if err != nil {
		t.Fatalf("bash could not split the printed command %q: %v", line, err)
	}
	words := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if words[0] != "helm" {
		t.Fatalf("the printed command does not run helm: %q", line)
	}
	return kube.RunTool(t, "helm", words[1:]...)
}

// The helm CLI is the contract, end to end: the command `octo-worker install` prints, run as printed with the
// upstream helm, brings up a worker that registers and runs an operation; `helm upgrade --reuse-values` of a
// script pod request reaches the next Job; an upgrade with a request above maxRequests fails in the
// values-check hook, the old worker keeps running (and says why in workers list) and still runs an operation;
// `helm rollback` works; `helm uninstall` leaves no object of the release and deregisters the worker, whose
// token stops working.
func TestHelmCLIInstallUpgradeRollbackUninstall(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	dir := t.TempDir()
	line := strings.TrimSpace(octo(t, nil, "install", "--server-url", d.url, "--registration-token", d.regToken,
		"--pool", pool, "--namespace", ns, "--release", releaseName, "--output-dir", dir,
		"--set", "image.repository="+imageRepo,
		"--set", "scriptPods.worker.image.repository="+toolsRepo,
		"--set-string", "scriptPods.worker.image.tag="+toolsTag,
		"--set", "worker.heartbeatInterval=2s",
		"--set", fmt.Sprintf("worker.healthPort=%d", proc.FreePort(t)),
		"--wait", "--timeout", "3m"))
	if strings.Contains(line, d.regToken) {
		t.Fatalf("the printed command holds the registration token: %s", line)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- worker pods of %s:\n%s", ns, workerPodReport(ns))
		}
	})
	if out, errOut, err := runPrinted(t, line); err != nil {
		t.Fatalf("the printed command failed: %v\n%s\n%s", err, out, errOut)
	}
	w := d.waitWorker(t, 3*time.Minute, "registered and healthy", func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy && time.Since(w.LastHeartbeat) < time.Minute
	})
	op := d.waitOp(t, d.submit(t, "after-install", "echo installed"), 3*time.Minute)
	if op.State != api.StateSucceeded {
		t.Fatalf("operation after the install: %s (%s)", op.State, op.Message)
	}
	archive := filepath.Join(dir, "octo-worker-"+versionA+".tgz")
	helm := func(args ...string) (string, string, error) { return kube.RunTool(t, "helm", args...) }

	// A tuned request reaches the next operation's Job.
	if out, errOut, err := helm("upgrade", releaseName, archive, "-n", ns, "--reuse-values",
		"--set", "scriptPods.resources.requests.cpu=300m", "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm upgrade --reuse-values: %v\n%s\n%s", err, out, errOut)
	}
	waitFor(t, 3*time.Minute, "the upgraded worker", func() (bool, string) {
		pod, err := workerPods(ns)
		return err == nil && len(pod) == 1 && pod[0].Status.Phase == corev1.PodRunning && pod[0].Name != "", workerPodReport(ns)
	})
	id := d.submit(t, "after-upgrade", "echo tuned")
	if op := d.waitOp(t, id, 3*time.Minute); op.State != api.StateSucceeded {
		t.Fatalf("operation after the upgrade: %s (%s)", op.State, op.Message)
	}
	job, err := kube.Client.BatchV1().Jobs(ns).Get(context.Background(), jobrunner.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cpu := job.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().String(); cpu != "300m" {
		t.Errorf("the Job after `helm upgrade --set scriptPods.resources.requests.cpu=300m` requests cpu %s", cpu)
	}

	// A request above maxRequests: the hook refuses it, nothing changes, the worker says why.
	before := runningWorkerPod(t, ns)
	out, errOut, err := helm("upgrade", releaseName, archive, "-n", ns, "--reuse-values",
		"--set", "scriptPods.resources.requests.cpu=5000m", "--wait", "--timeout", "3m")
	if err == nil {
		t.Fatalf("helm upgrade with requests.cpu=5000m succeeded:\n%s", out)
	}
	if !strings.Contains(errOut, "scriptPods.resources.requests.cpu: 5000m is more than scriptPods.resources.maxRequests.cpu") {
		t.Errorf("the refused upgrade does not show the validator's message:\n%s", errOut)
	}
	status, _, _ := helm("status", releaseName, "-n", ns)
	if !strings.Contains(status, "STATUS: failed") {
		t.Errorf("helm status after the refused upgrade:\n%s", status)
	}
	if after := runningWorkerPod(t, ns); after.UID != before.UID {
		t.Errorf("the refused upgrade replaced the worker pod %s with %s", before.Name, after.Name)
	}
	d.waitWorker(t, time.Minute, "reporting the refused upgrade", func(w api.Worker) bool {
		return strings.Contains(w.HealthMessage, "helm refused") && strings.Contains(w.HealthMessage, "5000m")
	})
	if op := d.waitOp(t, d.submit(t, "after-refusal", "echo still here"), 3*time.Minute); op.State != api.StateSucceeded {
		t.Fatalf("operation after the refused upgrade: %s (%s)", op.State, op.Message)
	}

	// Rollback to the last good revision.
	if out, errOut, err := helm("rollback", releaseName, "-n", ns, "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm rollback: %v\n%s\n%s", err, out, errOut)
	}
	if status, _, _ := helm("status", releaseName, "-n", ns); !strings.Contains(status, "STATUS: deployed") {
		t.Errorf("helm status after the rollback:\n%s", status)
	}

	// Uninstall: nothing of the release stays, and the worker's token stops working.
	identity, err := kube.Client.CoreV1().Secrets(ns).Get(context.Background(), jobrunner.IdentitySecretName(releaseName), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the worker's identity Secret: %v", err)
	}
	if out, errOut, err := helm("uninstall", releaseName, "-n", ns, "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s\n%s", err, out, errOut)
	}
	if left := releaseObjects(t, ns); len(left) > 0 {
		t.Errorf("helm uninstall left: %s", strings.Join(left, ", "))
	}
	if got, state := d.worker(t); got != nil {
		t.Errorf("the worker is still registered after uninstall: %s", state)
	}
	wc, err := client.New(client.Config{Server: d.url, Token: string(identity.Data["worker-token"])})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Heartbeat(context.Background(), api.HeartbeatRequest{Version: versionA, Capacity: 1}); err == nil {
		t.Errorf("the uninstalled worker %s's token still authenticates", w.ID)
	}
}

// releaseObjects lists what of the worker release is left in the cluster: objects labelled with the release,
// the identity Secret, and operation Jobs and their Secrets.
func releaseObjects(t *testing.T, ns string) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + releaseName}
	add := func(kind string, names []string, err error) {
		if err != nil {
			t.Fatalf("listing %s: %v", kind, err)
		}
		for _, n := range names {
			left = append(left, kind+" "+n)
		}
	}
	deps, err := kube.Client.AppsV1().Deployments(ns).List(ctx, sel)
	add("Deployment", namesOf(deps.Items, func(o metav1.Object) string { return o.GetName() }), err)
	cms, err := kube.Client.CoreV1().ConfigMaps(ns).List(ctx, sel)
	add("ConfigMap", namesOf(cms.Items, func(o metav1.Object) string { return o.GetName() }), err)
	secrets, err := kube.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	add("Secret", namesOf(secrets.Items, func(o metav1.Object) string { return o.GetName() }), err)
	jobs, err := kube.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	add("Job", namesOf(jobs.Items, func(o metav1.Object) string { return o.GetName() }), err)
	sas, err := kube.Client.CoreV1().ServiceAccounts(ns).List(ctx, sel)
	add("ServiceAccount", namesOf(sas.Items, func(o metav1.Object) string { return o.GetName() }), err)
	roles, err := kube.Client.RbacV1().Roles(ns).List(ctx, sel)
	add("Role", namesOf(roles.Items, func(o metav1.Object) string { return o.GetName() }), err)
	crbs, err := kube.Client.RbacV1().ClusterRoleBindings().List(ctx, sel)
	add("ClusterRoleBinding", namesOf(crbs.Items, func(o metav1.Object) string {
		if strings.HasPrefix(o.GetName(), ns+"-") {
			return o.GetName()
		}
		return ""
	}), err)
	return left
}

// namesOf returns name(item) of each item, skipping "".
func namesOf[T any, P interface {
	*T
	metav1.Object
}](items []T, name func(metav1.Object) string) []string {
	var out []string
	for i := range items {
		if n := name(P(&items[i])); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// What chartgen accepts, the upstream helm accepts, and renders the same: numbers where Kubernetes takes
// them, strings through --set-string, lists with commas, the tools image as one reference. And what neither
// can take without a token, `helm lint --strict` refuses too.
func TestHelmAcceptsWhatChartgenAccepts(t *testing.T) {
	t.Parallel()
	for name, flags := range map[string][]string{
		"numbers of CPUs":          {"--set", "scriptPods.resources.requests.cpu=1", "--set", "scriptPods.resources.maxRequests.cpu=4"},
		"strings that are numbers": {"--set-string", "scriptPods.worker.image.tag=2025", "--set-string", "worker.pools={42,blue}"},
		"a list with commas":       {"--set", "worker.pools={a,b}", "--set", "worker.capabilities={terraform,helm}"},
		"one image reference":      {"--set", "scriptPods.worker.image=debian:bookworm"},
		"json and literal":         {"--set-json", `scriptPods.nodeSelector={"pool":"deploy"}`, "--set-literal", "worker.registrationToken=a,b={c}"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"-f", "../../values/defaults.yaml"}, flags...)
			helm, errOut, err := cluster.RunTool(t, nil, "helm", append([]string{"template", "ow", chartDir, "--namespace", "deploy"}, args...)...)
			if err != nil {
				t.Fatalf("helm template %v: %v\n%s", flags, err, errOut)
			}
			rendered := octo(t, nil, append([]string{"chartgen", "render", "--release", "ow", "--namespace", "deploy"}, args...)...)
			if helm != rendered {
				t.Errorf("helm template and chartgen render differ for %v (-helm +octo-worker):\n%s", flags,
					cmp.Diff(strings.SplitAfter(helm, "\n"), strings.SplitAfter(rendered, "\n")))
			}
		})
	}
	t.Run("lint without a token", func(t *testing.T) {
		t.Parallel()
		out, errOut, err := cluster.RunTool(t, nil, "helm", "lint", "--strict", chartDir,
			"--set", "worker.serverUrl=https://deploy.example.com", "--set", "worker.pools={a}")
		if err == nil || !strings.Contains(out+errOut, "registrationToken") {
			t.Errorf("helm lint --strict without a registration token: %v\n%s\n%s", err, out, errOut)
		}
	})
}
