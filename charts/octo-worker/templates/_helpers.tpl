{{/* Names are derived from the release; Kubernetes names are at most 63 characters. */}}
{{- define "octo-worker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A name derived from the full name with a suffix, kept within 63 characters. */}}
{{- define "octo-worker.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "octo-worker.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace in their name: one release per namespace may share a name. */}}
{{- define "octo-worker.clusterName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s-%s" $root.Release.Namespace (include "octo-worker.fullname" $root) $suffix | trunc 253 -}}
{{- end -}}

{{- define "octo-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "octo-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "octo-worker.labels" -}}
{{ include "octo-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "octo-worker.chart" . }}
{{- end -}}

{{- define "octo-worker.serviceAccountName" -}}
{{- default (include "octo-worker.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "octo-worker.scriptServiceAccountName" -}}
{{- default (include "octo-worker.suffixed" (list . "scripts")) .Values.scriptPods.serviceAccount.name -}}
{{- end -}}

{{- define "octo-worker.workerName" -}}
{{- default .Release.Name .Values.worker.name -}}
{{- end -}}

{{- define "octo-worker.tokenSecretName" -}}
{{- default (include "octo-worker.suffixed" (list . "registration")) .Values.worker.registrationTokenSecret.name -}}
{{- end -}}

{{- define "octo-worker.tokenSecretKey" -}}
{{- if .Values.worker.registrationTokenSecret.name -}}
{{- .Values.worker.registrationTokenSecret.key -}}
{{- else -}}
token
{{- end -}}
{{- end -}}

{{/* An image reference: repository:tag, or repository@sha256:... for a digest; empty tag = appVersion. */}}
{{- define "octo-worker.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- $tag := default $root.Chart.AppVersion $img.tag | toString -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" $img.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Whether script pods get any Kubernetes API permissions (and so a mounted token). */}}
{{- define "octo-worker.scriptGrants" -}}
{{- if or .Values.scriptPods.serviceAccount.rules .Values.scriptPods.serviceAccount.clusterRole -}}true{{- end -}}
{{- end -}}

{{/*
The worker's effective values, as the agent reads them from its ConfigMap: every default resolved (names,
image tags), and the registration token replaced by a reference to the Secret that holds it (the agent gets
the token itself from OCTO_REGISTRATION_TOKEN).
*/}}
{{- define "octo-worker.effectiveValues" -}}
{{- $v := deepCopy .Values -}}
{{- $_ := set $v.worker "name" (include "octo-worker.workerName" .) -}}
{{- $_ := set $v.worker "registrationToken" "" -}}
{{- $_ := set $v.worker "registrationTokenSecret" (dict "name" (include "octo-worker.tokenSecretName" .) "key" (include "octo-worker.tokenSecretKey" .)) -}}
{{- $_ := set $v.image "tag" (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- if kindIs "map" .Values.scriptPods.worker.image -}}
{{- $_ := set $v.scriptPods.worker.image "tag" (default .Chart.AppVersion .Values.scriptPods.worker.image.tag | toString) -}}
{{- end -}}
{{- $_ := set $v.serviceAccount "name" (include "octo-worker.serviceAccountName" .) -}}
{{- $_ := set $v.scriptPods.serviceAccount "name" (include "octo-worker.scriptServiceAccountName" .) -}}
{{- toYaml $v -}}
{{- end -}}

{{/*
Rules values.schema.json cannot say at the right path. Everything else is in the schema, and the
values-check hook runs `octo-worker chartgen validate` on the release's values before an install or upgrade
changes anything. Each message is chartgen's, with the value's path first.
*/}}
{{- define "octo-worker.validate" -}}
{{- if and .Values.worker.registrationToken .Values.worker.registrationTokenSecret.name -}}
{{- fail "worker.registrationToken: set either worker.registrationToken or worker.registrationTokenSecret.name, not both" -}}
{{- end -}}
{{- with .Values.scriptPods.warmPool -}}
{{- if and .enabled (not .createPriorityClass) (not .priorityClassName) -}}
{{- fail "scriptPods.warmPool.priorityClassName: must name an existing PriorityClass with a negative value, or set scriptPods.warmPool.createPriorityClass: true: without it the placeholders have the script pods' priority and are never preempted" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The security context of the chart's hook pods: fixed, so that a hook runs even when the values it checks are wrong. */}}
{{- define "octo-worker.hookPodSpec" -}}
restartPolicy: Never
securityContext:
  runAsNonRoot: true
  runAsUser: 65534
  runAsGroup: 65534
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "octo-worker.hookContainer" -}}
image: {{ include "octo-worker.image" (list .Values.image .) | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
terminationMessagePolicy: FallbackToLogsOnError
command: ["/usr/local/bin/octo-worker"]
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
resources:
  requests:
    cpu: 10m
    memory: 32Mi
  limits:
    memory: 128Mi
{{- end -}}

{{/* The warm pool's PriorityClass: the one named, or the chart's own. */}}
{{- define "octo-worker.warmPoolPriorityClass" -}}
{{- default (include "octo-worker.clusterName" (list . "warm-pool")) .Values.scriptPods.warmPool.priorityClassName -}}
{{- end -}}
