package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// containerSpec turns a container of the pod into what startContainer needs.
func (w *podWorker) containerSpec(ctx context.Context, pod *corev1.Pod, c *corev1.Container, image Image, vols map[string]volume, run int) (containerSpec, error) {
	spec := containerSpec{
		hostname: pod.Name,
		image:    image,
		dir:      c.WorkingDir,
		scratch:  filepath.Join(w.dir, "containers", fmt.Sprintf("%s-%d", c.Name, run)),
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	uid, gid := psc.RunAsUser, psc.RunAsGroup
	if sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if sc.RunAsGroup != nil {
		gid = sc.RunAsGroup
	}
	nonRoot := psc.RunAsNonRoot
	if sc.RunAsNonRoot != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if uid != nil {
		spec.uid = uint32(*uid)
	}
	if gid != nil {
		spec.gid = uint32(*gid)
	} else {
		// Like containerd: the user's primary group from the image's /etc/passwd, else 0.
		_, spec.gid = lookupUser(image, spec.uid)
	}
	if nonRoot != nil && *nonRoot && spec.uid == 0 {
		if uid == nil {
			return spec, &configError{"container has runAsNonRoot and image will run as root (the octo process node's images run as uid 0 unless runAsUser is set)"}
		}
		return spec, &configError{"container's runAsUser breaks non-root policy"}
	}
	if psc.FSGroup != nil {
		spec.groups = append(spec.groups, uint32(*psc.FSGroup))
	}
	for _, g := range psc.SupplementalGroups {
		spec.groups = append(spec.groups, uint32(g))
	}
	spec.readOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	spec.noNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if caps := sc.Capabilities; caps != nil {
		for _, d := range caps.Drop {
			if strings.EqualFold(string(d), "ALL") {
				for cp := 0; cp <= 63; cp++ {
					spec.dropCaps = append(spec.dropCaps, uintptr(cp))
				}
				continue
			}
			if n, ok := capabilityNumbers[strings.TrimPrefix(strings.ToUpper(string(d)), "CAP_")]; ok {
				spec.dropCaps = append(spec.dropCaps, n)
			}
		}
	}

	b := &envBuilder{client: w.node.cfg.Client, pod: pod, apiHost: w.node.cfg.APIServerHost, apiPort: w.node.cfg.APIServerPort}
	env, err := b.build(ctx, c, image, spec.uid)
	if err != nil {
		return spec, err
	}
	spec.env = env
	vars := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	for _, a := range c.Command {
		spec.argv = append(spec.argv, expand(a, vars))
	}
	for _, a := range c.Args {
		spec.argv = append(spec.argv, expand(a, vars))
	}
	if len(spec.argv) == 0 {
		return spec, &configError{"no command specified: the octo process node's images have no entrypoint, so set command or args"}
	}

	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return spec, &configError{fmt.Sprintf("volumeMount %q: no volume of that name in the pod", m.Name)}
		}
		src := v.path
		if m.SubPath != "" {
			src = filepath.Join(v.path, m.SubPath)
			if !v.readOnly {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return spec, fmt.Errorf("volumeMount %q: creating subPath: %w", m.Name, err)
				}
			}
		}
		spec.mounts = append(spec.mounts, bindMount{source: src, target: m.MountPath, readOnly: m.ReadOnly || v.readOnly})
	}
	// The termination message file, like the kubelet's bind-mounted /dev/termination-log.
	msgFile := filepath.Join(w.dir, "termination", fmt.Sprintf("%s-%d", c.Name, run))
	if err := os.MkdirAll(filepath.Dir(msgFile), 0o755); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	if err := os.WriteFile(msgFile, nil, 0o666); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	if err := os.Chmod(msgFile, 0o666); err != nil {
		return spec, fmt.Errorf("creating termination message file: %w", err)
	}
	spec.mounts = append(spec.mounts, bindMount{source: msgFile, target: terminationPath(c)})
	return spec, nil
}

var capabilityNumbers = map[string]uintptr{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
	"SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
	"NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
	"SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
	"SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
	"AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
	"BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

func ptrTo[T any](v T) *T { return &v }
