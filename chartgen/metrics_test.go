package chartgen

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestMetricsValues: the defaults render no monitor, Service or scrape annotation; values/metrics.yaml renders a
// PodMonitor and a ServiceMonitor (with its Service) that select the worker pod alone and scrape /metrics on
// its health port, and annotates the pod.
func TestMetricsValues(t *testing.T) {
	t.Parallel()
	for _, n := range render(t, []string{"../values/defaults.yaml"}).names() {
		if strings.HasPrefix(n, "Service ") || strings.Contains(n, "Monitor ") {
			t.Errorf("defaults render %s", n)
		}
	}
	r := render(t, []string{"../values/metrics.yaml"})
	pod := find[*appsv1.Deployment](t, r, "ow-octo-worker").Spec.Template
	if a := pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "8081" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations: %v", a)
	}
	svc := find[*corev1.Service](t, r, "ow-octo-worker-metrics")
	selects := func(what string, sel, labels map[string]string) {
		t.Helper()
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s selects %s=%s; the target has %v", what, k, v, labels)
			}
		}
		if sel["app.kubernetes.io/component"] != "worker" {
			t.Errorf("%s selects %v: more than the worker pod", what, sel)
		}
	}
	selects("the Service", svc.Spec.Selector, pod.Labels)
	if p := svc.Spec.Ports[0]; p.TargetPort.String() != "health" || p.Port != 8081 {
		t.Errorf("Service port: %+v", p)
	}
	kinds := map[string]bool{}
	for _, o := range r.objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		kinds[u.GetKind()] = true
		target, endpoints := pod.Labels, "podMetricsEndpoints"
		if u.GetKind() == "ServiceMonitor" {
			target, endpoints = svc.Labels, "endpoints"
		}
		sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
		selects(u.GetKind(), sel, target)
		eps, _, _ := unstructured.NestedSlice(u.Object, "spec", endpoints)
		if ep, _ := eps[0].(map[string]any); len(eps) != 1 || ep["port"] != "health" || ep["path"] != "/metrics" || u.GetLabels()["release"] != "prometheus" {
			t.Errorf("%s: endpoints %v, labels %v", u.GetKind(), eps, u.GetLabels())
		}
	}
	if !kinds["PodMonitor"] || !kinds["ServiceMonitor"] {
		t.Errorf("monitors rendered: %v", kinds)
	}
}
