package chart

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

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
