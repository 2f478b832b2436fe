package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volume is a pod volume materialized on the host.
type volume struct {
	path     string
	readOnly bool // secret, configMap, projected and downwardAPI volumes are always mounted read-only
}

// setupVolumes materializes every volume of the pod under dir/volumes. Errors that may resolve themselves
// (a Secret or ConfigMap created later, kube-root-ca.crt not yet published) are returned as they are; the
// caller retries with a back-off, like the kubelet's FailedMount.
func (w *podWorker) setupVolumes(ctx context.Context, pod *corev1.Pod) (map[string]volume, error) {
	vols := map[string]volume{}
	var fsGroup *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		var files map[string]fileContent
		var err error
		readOnly := true
		defaultMode := int32(0o644)
		switch {
		case v.EmptyDir != nil:
			readOnly = false
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, fmt.Errorf("volume %q: creating emptyDir: %w", v.Name, err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if fsGroup != nil {
				if err := os.Chown(dir, -1, int(*fsGroup)); err != nil {
					return nil, fmt.Errorf("volume %q: applying fsGroup: %w", v.Name, err)
				}
				if err := os.Chmod(dir, 0o777|os.ModeSetgid); err != nil {
					return nil, fmt.Errorf("volume %q: applying fsGroup: %w", v.Name, err)
				}
			}
			vols[v.Name] = volume{path: dir}
			continue
		case v.HostPath != nil:
			p := v.HostPath.Path
			if t := v.HostPath.Type; t != nil {
				switch *t {
				case corev1.HostPathDirectoryOrCreate:
					if err := os.MkdirAll(p, 0o755); err != nil {
						return nil, fmt.Errorf("volume %q: creating hostPath: %w", v.Name, err)
					}
				case corev1.HostPathFileOrCreate:
					f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
					if err != nil {
						return nil, fmt.Errorf("volume %q: creating hostPath: %w", v.Name, err)
					}
					_ = f.Close()
				}
			}
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("volume %q: hostPath: %w", v.Name, err)
			}
			vols[v.Name] = volume{path: p}
			continue
		case v.Secret != nil:
			files, err = w.secretFiles(ctx, pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
			if v.Secret.DefaultMode != nil {
				defaultMode = *v.Secret.DefaultMode
			}
		case v.ConfigMap != nil:
			files, err = w.configMapFiles(ctx, pod, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional)
			if v.ConfigMap.DefaultMode != nil {
				defaultMode = *v.ConfigMap.DefaultMode
			}
		case v.DownwardAPI != nil:
			files, err = downwardFiles(pod, v.DownwardAPI.Items)
			if v.DownwardAPI.DefaultMode != nil {
				defaultMode = *v.DownwardAPI.DefaultMode
			}
		case v.Projected != nil:
			files, err = w.projectedFiles(ctx, pod, v.Projected)
			if v.Projected.DefaultMode != nil {
				defaultMode = *v.Projected.DefaultMode
			}
		default:
			return nil, &configError{fmt.Sprintf("volume %q: only emptyDir, hostPath, secret, configMap, downwardAPI and projected volumes are supported by this node", v.Name)}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if err := writeVolume(dir, files, defaultMode, fsGroup); err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		vols[v.Name] = volume{path: dir, readOnly: readOnly}
	}
	return vols, nil
}

type fileContent struct {
	data []byte
	mode *int32
}

func (w *podWorker) secretFiles(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool) (map[string]fileContent, error) {
	b := &envBuilder{client: w.node.cfg.Client, pod: pod}
	s, err := b.secret(ctx, name, optional != nil && *optional)
	if err != nil || s == nil {
		return nil, err
	}
	return project(s.Data, items, "Secret", name, optional)
}

func (w *podWorker) configMapFiles(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool) (map[string]fileContent, error) {
	b := &envBuilder{client: w.node.cfg.Client, pod: pod}
	cm, err := b.configMap(ctx, name, optional != nil && *optional)
	if err != nil || cm == nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return project(data, items, "ConfigMap", name, optional)
}

// project selects the files of a Secret or ConfigMap volume: every key, or the listed items.
func project(data map[string][]byte, items []corev1.KeyToPath, kind, name string, optional *bool) (map[string]fileContent, error) {
	files := map[string]fileContent{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = fileContent{data: v}
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, &configError{fmt.Sprintf("configmap references non-existent config key: %s (%s %s)", it.Key, kind, name)}
		}
		files[it.Path] = fileContent{data: v, mode: it.Mode}
	}
	return files, nil
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) (map[string]fileContent, error) {
	files := map[string]fileContent{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = podField(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			var c *corev1.Container
			for i := range pod.Spec.Containers {
				if pod.Spec.Containers[i].Name == it.ResourceFieldRef.ContainerName {
					c = &pod.Spec.Containers[i]
				}
			}
			if c == nil {
				return nil, &configError{fmt.Sprintf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)}
			}
			v, _, err = resourceField(c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
		}
		files[it.Path] = fileContent{data: []byte(v), mode: it.Mode}
	}
	return files, nil
}

func (w *podWorker) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) (map[string]fileContent, error) {
	files := map[string]fileContent{}
	for _, src := range p.Sources {
		var part map[string]fileContent
		var err error
		switch {
		case src.Secret != nil:
			part, err = w.secretFiles(ctx, pod, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
		case src.ConfigMap != nil:
			part, err = w.configMapFiles(ctx, pod, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
		case src.DownwardAPI != nil:
			part, err = downwardFiles(pod, src.DownwardAPI.Items)
		case src.ServiceAccountToken != nil:
			var token string
			token, err = w.serviceAccountToken(ctx, pod, src.ServiceAccountToken)
			part = map[string]fileContent{src.ServiceAccountToken.Path: {data: []byte(token)}}
		default:
			err = &configError{"projected volume source not supported by this node (secret, configMap, downwardAPI and serviceAccountToken are)"}
		}
		if err != nil {
			return nil, err
		}
		for k, v := range part {
			files[k] = v
		}
	}
	return files, nil
}

// serviceAccountToken requests a token bound to the pod through the TokenRequest API, as the kubelet does
// for projected service-account tokens.
func (w *podWorker) serviceAccountToken(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := w.node.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	return tr.Status.Token, nil
}

// writeVolume writes files into dir with their modes, applying the pod's fsGroup as the kubelet does for
// read-only volumes (group-owned by fsGroup, group-readable).
func writeVolume(dir string, files map[string]fileContent, defaultMode int32, fsGroup *int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating volume directory: %w", err)
	}
	for rel, f := range files {
		if filepath.IsAbs(rel) || strings.HasPrefix(filepath.Clean(rel), "..") {
			return &configError{fmt.Sprintf("file path %q must be relative and must not contain '..'", rel)}
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", rel, err)
		}
		mode := defaultMode
		if f.mode != nil {
			mode = *f.mode
		}
		perm := os.FileMode(mode) & 0o777
		if fsGroup != nil {
			perm |= 0o440
		}
		if err := os.WriteFile(p, f.data, perm); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		if err := os.Chmod(p, perm); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		if fsGroup != nil {
			if err := os.Chown(p, -1, int(*fsGroup)); err != nil {
				return fmt.Errorf("applying fsGroup to %s: %w", rel, err)
			}
		}
	}
	if fsGroup != nil {
		if err := os.Chown(dir, -1, int(*fsGroup)); err != nil {
			return fmt.Errorf("applying fsGroup: %w", err)
		}
	}
	return nil
}
