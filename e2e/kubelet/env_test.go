package kubelet

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"A": "1", "B": "two"}
	cases := map[string]string{
		"plain":         "plain",
		"$(A)":          "1",
		"x-$(A)-$(B)-y": "x-1-two-y",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"cost $5":       "cost $5",
		"unclosed $(A":  "unclosed $(A",
		"trailing $":    "trailing $",
	}
	for in, want := range cases {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGetOnce(t *testing.T) {
	t.Parallel()
	gets := 0
	get := func(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
		gets++
		switch name {
		case "there":
			return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}}, nil
		case "broken":
			return nil, errors.New("connection refused")
		}
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}
	cache := map[string]*corev1.Secret{}
	for range 2 {
		if s, err := getOnce(t.Context(), cache, "secret", "there", false, get); err != nil || s.Name != "there" {
			t.Fatalf("getOnce(there) = %v, %v", s, err)
		}
	}
	if gets != 1 {
		t.Errorf("%d gets for one object read twice, want 1", gets)
	}
	if s, err := getOnce(t.Context(), cache, "secret", "missing", true, get); s != nil || err != nil {
		t.Errorf("getOnce(missing, optional) = %v, %v; want nil, nil", s, err)
	}
	var ce *configError
	if _, err := getOnce(t.Context(), cache, "secret", "missing", false, get); !errors.As(err, &ce) || err.Error() != `secret "missing" not found` {
		t.Errorf("getOnce(missing) = %v, want the configError secret \"missing\" not found", err)
	}
	if _, err := getOnce(t.Context(), cache, "secret", "broken", false, get); err == nil || errors.As(err, &ce) || err.Error() != "getting secret broken: connection refused" {
		t.Errorf("getOnce(broken) = %v, want the wrapped error", err)
	}
}
