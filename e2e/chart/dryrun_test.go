package chart

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// Every example values file renders into objects the API server accepts (server-side dry run, in a namespace
// that enforces Pod Security "restricted"), and the worker pod and the script pod it configures are admitted
// there.
func TestRenderedChartServerSideDryRun(t *testing.T) {
	files, err := filepath.Glob("../../values/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example values files: %v", err)
	}
	a := newApplier(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			ns := kube.Namespace(t, restricted)
			sets := []string{"image.repository=" + imageRepo}
			if strings.Contains(f, "restricted-permissions") || strings.Contains(f, "cluster-role") {
				// The examples name namespaces of their own; use namespaces of this test instead.
				t1, t2 := kube.Namespace(t, nil), kube.Namespace(t, nil)
				sets = append(sets, "scriptPods.serviceAccount.targetNamespaces={"+t1+","+t2+"}")
			}
			v, objs := renderFor(t, ns, []string{f}, sets...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var podSpec *corev1.PodTemplateSpec
			for _, o := range objs {
				if o.GetAPIVersion() == "monitoring.coreos.com/v1" {
					continue // no Prometheus Operator CRDs here: chartgen's TestMetricsValues and helm template check monitors
				}
				if _, err := a.apply(ctx, o, ns, true); err != nil {
					t.Errorf("server-side dry run of %s %s: %v", o.GetKind(), o.GetName(), err)
				}
				if o.GetKind() == "Deployment" {
					var tmpl corev1.PodTemplateSpec
					raw, _, err := unstructured.NestedMap(o.Object, "spec", "template")
					if err != nil {
						t.Fatal(err)
					}
					if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &tmpl); err != nil {
						t.Fatal(err)
					}
					podSpec = &tmpl
				}
			}
			if podSpec == nil {
				t.Fatal("no Deployment rendered")
			}
			// Pod Security admission judges pods, not Deployments: create the worker pod (dry run). The
			// ServiceAccount does not exist in a dry run, and Pod Security does not look at it.
			worker := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: ns}, Spec: podSpec.Spec}
			worker.Spec.ServiceAccountName = "default"
			if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, worker, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("the worker pod is not admitted under Pod Security restricted: %v", err)
			}
			// The script pod, as the jobrunner builds it from these values.
			job := scriptJob(t, ns, v, "")
			script := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "script", Namespace: ns}, Spec: job.Spec.Template.Spec}
			script.Spec.ServiceAccountName = "default"
			if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, script, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("the script pod is not admitted under Pod Security restricted: %v", err)
			}
			for _, profile := range v.ScriptPods.ProfileNames() { // and the pod of each profile
				job := scriptJob(t, ns, v, profile)
				script := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "script", Namespace: ns}, Spec: job.Spec.Template.Spec}
				script.Spec.ServiceAccountName = "default"
				if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, script, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("the pod of profile %s is not admitted under Pod Security restricted: %v", profile, err)
				}
			}
		})
	}
}

// A pod outside "restricted" is refused in such a namespace: the checks above can fail.
func TestRestrictedNamespaceRefusesRootPod(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Fatalf("a pod without a restricted security context was admitted: %v", err)
	}
}

// scriptJob builds an operation's Job with the jobrunner, configured from the chart's values the way the
// agent is, for a step naming profile ("" for none).
func scriptJob(t *testing.T, ns string, v chartgen.Values, profile string) *batchv1.Job {
	t.Helper()
	cfg, err := jobrunner.ConfigFrom(v, jobrunner.Env{Namespace: ns, Release: "ow", Version: versionA})
	if err != nil {
		t.Fatal(err)
	}
	lease := &api.Lease{LeaseID: "l1", Operation: api.Operation{ID: "op-1", OperationSpec: api.OperationSpec{Pool: "default", Script: "echo hi", Profile: profile}}}
	requests, _, err := cfg.RequestsFor(&lease.Operation)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.BuildJob("worker-1", lease, requests)
}
