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

// IdentitySecretName names the Secret that keeps the identity of the worker of Helm release release. The
// agent creates it (EnsureIdentity); the chart's pre-delete hook deletes it (ForgetIdentity).
func IdentitySecretName(release string) string { return release + "-identity" }

func identityOf(s *corev1.Secret) Identity {
	return Identity{WorkerID: string(s.Data[identityIDKey]), Token: string(s.Data[identityTokenKey])}
}

// EnsureIdentity returns the identity kept in the Secret name of namespace ns, or registers (with register)
// and keeps the new identity there, so a restarted worker stays the same worker and can re-adopt its Jobs.
// created says whether it registered.
func EnsureIdentity(ctx context.Context, kube kubernetes.Interface, ns, name string, register func(context.Context) (api.RegisterResponse, error)) (Identity, bool, error) {
	secrets := kube.CoreV1().Secrets(ns)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		id := identityOf(s)
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

// forgetAttempts bounds how often ForgetIdentity starts over when the Secret changed under it.
const forgetAttempts = 3

// ForgetIdentity ends the worker identity kept in the Secret name of namespace ns, when the worker is
// uninstalled: it reads the identity, hands it to deregister (which removes the worker from the dispatch
// server with the worker's own token), then deletes the Secret. found is false when there is no Secret:
// nothing to do. The Secret may lack the worker id or token (deregister decides what that means).
//
// The Secret is deleted only after deregister succeeds: otherwise it is kept, so that a re-run can still
// deregister with its token. It is deleted only if it is still the Secret that was read (same UID and
// resource version): one re-created meanwhile (a worker that registered again) holds another identity, so
// ForgetIdentity starts over with it, up to three times.
//
// Permissions: get and delete on the Secret.
func ForgetIdentity(ctx context.Context, kube kubernetes.Interface, ns, name string, deregister func(context.Context, Identity) error) (id Identity, found bool, err error) {
	secrets := kube.CoreV1().Secrets(ns)
	for attempt := 1; ; attempt++ {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return id, found, nil
		}
		if err != nil {
			return id, found, fmt.Errorf("reading identity Secret %s/%s: %w (the account running this needs get and delete on it)", ns, name, err)
		}
		id, found = identityOf(s), true
		if err := deregister(ctx, id); err != nil {
			return id, found, fmt.Errorf("%w; the identity Secret %s/%s is kept, so that a re-run can still deregister with its token", err, ns, name)
		}
		uid, version := s.UID, s.ResourceVersion
		err = secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &version}})
		switch {
		case err == nil, apierrors.IsNotFound(err):
			return id, found, nil
		case apierrors.IsConflict(err) && attempt < forgetAttempts:
			continue // changed or re-created since it was read: forget what it holds now
		default:
			return id, found, fmt.Errorf("deleting identity Secret %s/%s (worker %s is deregistered): %w", ns, name, id.WorkerID, err)
		}
	}
}

// DeleteWorkerObjects deletes what worker workerID created in namespace ns for its operations, when it is
// uninstalled: their Jobs (in the foreground: their pods go first, and the Secrets the Jobs own with them)
// and operation Secrets left without a Job. Running scripts are stopped; call it after the worker was
// deregistered, when the operations it held are lost already. It returns how many Jobs and Secrets it
// deleted; objects already being deleted, or gone meanwhile, are not counted.
//
// Permissions: list and delete on jobs and secrets.
func DeleteWorkerObjects(ctx context.Context, kube kubernetes.Interface, ns, workerID string) (jobs, secrets int, err error) {
	sel := metav1.ListOptions{LabelSelector: WorkerSelector(workerID).String()}
	jl, err := kube.BatchV1().Jobs(ns).List(ctx, sel)
	if err != nil {
		return 0, 0, fmt.Errorf("listing the Jobs of worker %s in %s: %w (the account running this needs list and delete on jobs)", workerID, ns, err)
	}
	objs := kubeObjects{kube: kube, ns: ns}
	for _, j := range jl.Items {
		if j.DeletionTimestamp != nil {
			continue
		}
		deleted, err := objs.deleteJob(ctx, j.Name)
		if err != nil {
			return jobs, secrets, fmt.Errorf("deleting Job %s/%s of worker %s: %w", ns, j.Name, workerID, err)
		}
		if deleted {
			jobs++
		}
	}
	sl, err := kube.CoreV1().Secrets(ns).List(ctx, sel)
	if err != nil {
		return jobs, 0, fmt.Errorf("listing the Secrets of worker %s in %s: %w (the account running this needs list and delete on secrets)", workerID, ns, err)
	}
	for _, s := range sl.Items {
		if len(s.OwnerReferences) > 0 || s.DeletionTimestamp != nil {
			continue // its Job's deletion takes it
		}
		deleted, err := objs.deleteSecret(ctx, s.Name)
		if err != nil {
			return jobs, secrets, fmt.Errorf("deleting Secret %s/%s of worker %s: %w", ns, s.Name, workerID, err)
		}
		if deleted {
			secrets++
		}
	}
	return jobs, secrets, nil
}
