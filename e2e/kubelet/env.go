package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// configError is a problem with a container's configuration that may resolve itself (a Secret created
// later): the kubelet reports it as CreateContainerConfigError and retries.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// envBuilder resolves a container's environment the way the kubelet does.
type envBuilder struct {
	client     kubernetes.Interface
	pod        *corev1.Pod
	apiHost    string
	apiPort    int
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
}

func (b *envBuilder) secret(ctx context.Context, name string, optional bool) (*corev1.Secret, error) {
	if b.secrets == nil {
		b.secrets = map[string]*corev1.Secret{}
	}
	return getOnce(ctx, b.secrets, "secret", name, optional, b.client.CoreV1().Secrets(b.pod.Namespace).Get)
}

func (b *envBuilder) configMap(ctx context.Context, name string, optional bool) (*corev1.ConfigMap, error) {
	if b.configMaps == nil {
		b.configMaps = map[string]*corev1.ConfigMap{}
	}
	return getOnce(ctx, b.configMaps, "configmap", name, optional, b.client.CoreV1().ConfigMaps(b.pod.Namespace).Get)
}

// getOnce returns the object name of a kind from cache, else gets it and keeps it there. A missing object is
// nil when optional, and a configError otherwise.
func getOnce[T any](ctx context.Context, cache map[string]*T, kind, name string, optional bool,
	get func(context.Context, string, metav1.GetOptions) (*T, error)) (*T, error) {
	if o, ok := cache[name]; ok {
		return o, nil
	}
	o, err := get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if optional {
			return nil, nil
		}
		return nil, &configError{fmt.Sprintf("%s %q not found", kind, name)}
	}
	if err != nil {
		return nil, fmt.Errorf("getting %s %s: %w", kind, name, err)
	}
	cache[name] = o
	return o, nil
}

// build returns the container's environment as KEY=value strings, in the kubelet's order: runtime defaults,
// service variables, envFrom, env (each value expanded against what precedes it).
func (b *envBuilder) build(ctx context.Context, c *corev1.Container, image Image, uid uint32) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	set("HOSTNAME", b.pod.Name)
	home, _ := lookupUser(image, uid)
	set("HOME", home)
	if b.apiHost != "" {
		port := strconv.Itoa(b.apiPort)
		set("KUBERNETES_SERVICE_HOST", b.apiHost)
		set("KUBERNETES_SERVICE_PORT", port)
		set("KUBERNETES_SERVICE_PORT_HTTPS", port)
		set("KUBERNETES_PORT", "tcp://"+b.apiHost+":"+port)
		set("KUBERNETES_PORT_"+port+"_TCP", "tcp://"+b.apiHost+":"+port)
		set("KUBERNETES_PORT_"+port+"_TCP_PROTO", "tcp")
		set("KUBERNETES_PORT_"+port+"_TCP_PORT", port)
		set("KUBERNETES_PORT_"+port+"_TCP_ADDR", b.apiHost)
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := b.configMap(ctx, ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			if cm != nil {
				for k, v := range cm.Data {
					set(ef.Prefix+k, v)
				}
			}
		case ef.SecretRef != nil:
			s, err := b.secret(ctx, ef.SecretRef.Name, ef.SecretRef.Optional != nil && *ef.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			if s != nil {
				for k, v := range s.Data {
					set(ef.Prefix+k, string(v))
				}
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		v, ok, err := b.valueFrom(ctx, c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

func (b *envBuilder) valueFrom(ctx context.Context, c *corev1.Container, src *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := podField(b.pod, src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		return resourceField(c, src.ResourceFieldRef)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := b.secret(ctx, ref.Name, optional)
		if err != nil || s == nil {
			return "", false, err
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, b.pod.Namespace, ref.Name)}
		}
		return string(v), true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := b.configMap(ctx, ref.Name, optional)
		if err != nil || cm == nil {
			return "", false, err
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, b.pod.Namespace, ref.Name)}
		}
		return v, true, nil
	}
	return "", false, &configError{"env valueFrom has no source this node supports"}
}

// podField returns a downward-API field of the pod.
func podField(pod *corev1.Pod, path string) (string, error) {
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.podIP", "status.hostIPs", "status.podIPs":
		return "127.0.0.1", nil
	}
	return "", &configError{fmt.Sprintf("unsupported fieldPath %q", path)}
}

func formatMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, k+"="+strconv.Quote(v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, bool, error) {
	list := c.Resources.Limits
	name := strings.TrimPrefix(ref.Resource, "limits.")
	if r, ok := strings.CutPrefix(ref.Resource, "requests."); ok {
		list, name = c.Resources.Requests, r
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "0", true, nil
	}
	div := ref.Divisor
	if div.IsZero() {
		if name == "cpu" {
			// The kubelet rounds CPU up to whole cores by default.
			return strconv.FormatInt((q.MilliValue()+999)/1000, 10), true, nil
		}
		return strconv.FormatInt(q.Value(), 10), true, nil
	}
	return strconv.FormatInt((q.MilliValue()+div.MilliValue()-1)/div.MilliValue(), 10), true, nil
}

// expand replaces $(VAR) with the value of VAR when it is defined; $$ is a literal $, as in Kubernetes.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// lookupUser finds uid in the image's /etc/passwd, as container runtimes do: its home directory and primary
// group; "/" and 0 when absent.
func lookupUser(image Image, uid uint32) (home string, gid uint32) {
	root := image.Root
	if root == "" {
		root = "/"
	}
	f, err := os.Open(filepath.Join(root, "etc/passwd"))
	if err != nil {
		return "/", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[2] == strconv.FormatUint(uint64(uid), 10) {
			g, _ := strconv.ParseUint(fields[3], 10, 32)
			return fields[5], uint32(g)
		}
	}
	return "/", 0
}
