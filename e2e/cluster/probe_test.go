package cluster_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// inClusterProbeEnv makes this test binary act as an in-cluster client instead of running tests.
	inClusterProbeEnv = "OCTO_E2E_INCLUSTER_PROBE"
	// probeImage is the image that carries this test binary at /usr/local/bin/incluster-probe.
	probeImage = "incluster-probe:e2e"
)

// inClusterProbe runs inside a pod: it builds client-go's in-cluster configuration, says who it is, and
// tries one allowed and one forbidden request. Exit code 0 means both behaved as RBAC says.
func inClusterProbe() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		return 1
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fail("in-cluster config: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail("client: %v", err)
	}
	nsBytes, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return fail("namespace file: %v", err)
	}
	ns := strings.TrimSpace(string(nsBytes))
	ctx := context.Background()
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fail("self subject review: %v", err)
	}
	fmt.Printf("as %s in %s\n", review.Status.UserInfo.Username, ns)
	if _, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err != nil {
		return fail("list configmaps: %v", err)
	}
	fmt.Println("list configmaps: allowed")
	_, err = client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		return fail("list secrets: got %v, want forbidden", err)
	}
	fmt.Println("list secrets: forbidden")
	return 0
}
