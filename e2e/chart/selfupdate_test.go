package chart

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
)

// chartArchive packages the embedded chart with the given version and appVersion (the worker image tag).
func chartArchive(t *testing.T, version, appVersion string) []byte {
	t.Helper()
	ch, err := chartgen.EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	p, err := chartgen.Package(ch, version, appVersion, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitOutcome polls the release's latest self-update until it has finished.
func waitOutcome(t *testing.T, ns string, within time.Duration) *selfupdate.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		o, err := selfupdate.LastOutcome(ctx, kube.Client, ns, "ow")
		if err != nil {
			t.Fatal(err)
		}
		if o != nil && o.State != "running" {
			return o
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the self-update did not finish within %s: %+v", within, o)
		case <-tick.C:
		}
	}
}

// A chart whose digest does not match is refused before anything is created.
func TestSelfUpdateRefusesTamperedChart(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	archive := chartArchive(t, versionB, versionB)
	_, err := selfupdate.Start(ctx, kube.Client, selfupdate.Request{
		Namespace: ns, Release: "ow", Version: versionB, ChartArchive: archive,
		SHA256: strings.Repeat("0", 64), Image: imageRepo + ":" + versionA, ServiceAccount: "ow-octo-worker",
	})
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("a chart with the wrong digest: %v, want a sha256 refusal", err)
	}
	jobs, err := kube.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 0 {
		t.Fatalf("jobs after a refused self-update: %v %v", jobs, err)
	}
}

// The self-update Job runs in the cluster with the worker's own ServiceAccount (in a namespace enforcing
// Pod Security restricted), upgrades the release with the Helm SDK, and when the new worker never becomes
// ready it rolls back: the old version's Deployment is restored and the failure is reported with its reason.
// The target version's image does not exist on the node, so this fails the same way whatever the agent does.
func TestSelfUpdateRollsBackAFailedUpgrade(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	install(t, ns, []string{"../../values/defaults.yaml"})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	broken := "9.9.9-missing"
	archive := chartArchive(t, "9.9.9", broken)
	job, err := selfupdate.Start(ctx, kube.Client, selfupdate.Request{
		Namespace: ns, Release: "ow", Version: "9.9.9", FromVersion: versionA, ChartArchive: archive,
		Image: imageRepo + ":" + versionA, ServiceAccount: "ow-octo-worker", Timeout: 40 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := waitOutcome(t, ns, 5*time.Minute)
	if o.Job != job || o.State != "failed" || o.Version != "9.9.9" || o.FromVersion != versionA {
		t.Fatalf("outcome %+v, want job %s failed for 9.9.9", o, job)
	}
	if strings.Contains(o.Message, "forbidden") {
		t.Errorf("the worker's ServiceAccount lacks a permission the upgrade needs: %s", o.Message)
	}
	t.Logf("reported failure: %s", o.Message)

	dep, err := kube.Client.AppsV1().Deployments(ns).Get(ctx, "ow-octo-worker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != imageRepo+":"+versionA {
		t.Errorf("after the rollback the worker image is %s, want %s:%s", img, imageRepo, versionA)
	}
	hc, err := chartgen.HelmConfig(kube.RESTConfig(), ns, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := action.NewHistory(hc).Run("ow")
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, r := range hist {
		statuses = append(statuses, r.Chart.Metadata.Version+":"+r.Info.Status.String())
	}
	if len(hist) < 3 || hist[1].Info.Status != release.StatusFailed || hist[2].Chart.Metadata.Version != "0.1.0" {
		t.Errorf("release history %v, want the 9.9.9 upgrade failed and a rollback to 0.1.0", statuses)
	}
	// The chart ConfigMap stays for the record; the Job ran as the worker's ServiceAccount.
	j, err := kube.Client.BatchV1().Jobs(ns).Get(ctx, job, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sa := j.Spec.Template.Spec.ServiceAccountName; sa != "ow-octo-worker" {
		t.Errorf("self-update Job runs as %s", sa)
	}
	if _, err := kube.Client.CoreV1().ConfigMaps(ns).Get(ctx, job, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Errorf("chart ConfigMap %s is gone", job)
	}
}
