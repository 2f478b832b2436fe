// Package kubelet is a Kubernetes node for tests whose containers are host processes: it registers a Node,
// keeps its Lease fresh, runs the pods the scheduler binds to it and reports their status and events like a
// kubelet, and serves /containerLogs so that `kubectl logs` works through the API server.
//
// No container runtime exists on the machines this runs on, so each container is a host process started
// in its own mount, UTS and PID namespaces (root is required). Its root filesystem is an overlay with a
// private tmpfs upper layer over the image's root (the host's root unless Config.Images says otherwise),
// with a private /dev, the host's /proc and /sys, and the pod's volumes bound at their mount paths; mount
// points that do not exist in the image are created only inside that private root. Killing the process
// kills everything it started (it is its PID namespace's init), and a process dies with the program that
// runs the node (Pdeathsig).
//
// Supported: init containers in order, then containers; command, args, env (values, $(VAR) expansion,
// secret/configMap/field/resource refs, envFrom), workingDir; restartPolicy Never, OnFailure and Always
// (with the kubelet's back-off); activeDeadlineSeconds (phase Failed, reason DeadlineExceeded); deletion
// with the termination grace period (SIGTERM, then SIGKILL); runAsUser, runAsGroup, fsGroup,
// supplementalGroups, runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation=false (no_new_privs)
// and capabilities.drop (bounding set); volumes emptyDir, hostPath, secret, configMap, downwardAPI and
// projected (including service-account tokens from the TokenRequest API, bound to the pod); termination
// messages (terminationMessagePath, FallbackToLogsOnError); image names that fail to pull
// (Config.PullFailurePatterns: ErrImagePull then ImagePullBackOff, forever) and invalid image names
// (InvalidImageName). Logs are kept in the CRI format and served with follow, timestamps, sinceTime,
// sinceSeconds, tailLines, limitBytes, previous and stream. They are rotated as the kubelet's container log
// manager rotates them (Config.ContainerLogMaxSize, ContainerLogMaxFiles, ContainerLogMonitorInterval; the
// kubelet's defaults 10Mi, 5 and 10s): every interval, a running container's current file that has reached
// the size is renamed to <name>.<YYYYMMDD-hhmmss> and a new one opened, older rotated files are gzipped and
// the oldest removed so that at most MaxFiles remain. Sizes are checked only then, so a file exceeds the size
// between checks. The log endpoint reads only the current file, and a follower goes on in the new file
// after a rotation (see rotate.go for what differs from the kubelet).
//
// Not supported: resource limits and OOMKilled (no cgroups are used), probes (containers are ready when
// running), sidecar init containers (restartPolicy Always on an init container), exec/attach/port-forward,
// ephemeral containers, seccomp and AppArmor profiles, adding capabilities, volume types other than those
// above, updates of Secret/ConfigMap volume contents after the pod started, and service links (only the
// KUBERNETES_* variables are set). Every pod shares the host's network (podIP = hostIP = 127.0.0.1).
//
// A node that stops (Run returns) kills its containers; its Node and Pods stay in the API as they were. A
// node started again under the same name takes the Node over; pods it had started are reported Failed with
// their unfinished containers terminated as ContainerStatusUnknown (exit code 137), as a kubelet reports
// containers that disappeared; they are not run again.
package kubelet
