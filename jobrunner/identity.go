package jobrunner

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Identity is a registered worker's id and token.
type Identity struct {
	WorkerID string
	Token    string
}

const (
	identityIDKey    = "worker-id"
	identityTokenKey = "worker-token"
)

// EnsureIdentity returns the identity kept in the Secret name of namespace ns, or registers (with register)
// and keeps the new identity there, so a restarted worker stays the same worker and can re-adopt its Jobs.
// created says whether it registered.
func EnsureIdentity(ctx context.Context, kube kubernetes.Interface, ns, name string, register func(context.Context) (api.RegisterResponse, error)) (Identity, bool, error) {
	secrets := kube.CoreV1().Secrets(ns)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		id := Identity{WorkerID: string(s.Data[identityIDKey]), Token: string(s.Data[identityTokenKey])}
		if id.WorkerID == "" || id.Token == "" {
			return Identity{}, false, fmt.Errorf("identity Secret %s/%s lacks %s or %s: delete it to register again", ns, name, identityIDKey, identityTokenKey)
		}
		return id, false, nil
	case !apierrors.IsNotFound(err):
		return Identity{}, false, fmt.Errorf("reading identity Secret %s/%s: %w", ns, name, err)
	}
	if register == nil {
		return Identity{}, false, errors.New("no identity Secret and no registration token: set OCTO_REGISTRATION_TOKEN")
	}
	resp, err := register(ctx)
	if err != nil {
		return Identity{}, false, fmt.Errorf("registering with the dispatch server: %w", err)
	}
	id := Identity{WorkerID: resp.WorkerID, Token: resp.WorkerToken}
	_, err = secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{LabelManagedBy: ManagedByValue, "octo-worker.io/identity": "true"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{identityIDKey: []byte(id.WorkerID), identityTokenKey: []byte(id.Token)},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, false, fmt.Errorf("keeping the new identity (worker %s) in Secret %s/%s: %w; the worker's Role must allow creating Secrets", id.WorkerID, ns, name, err)
	}
	return id, true, nil
}
