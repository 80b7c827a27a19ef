{{/* Names, labels and the pod template parts every tern workload shares. */}}

{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* tern.component: "<fullname>-<component>"; call with (list $ "gateway"). */}}
{{- define "tern.component" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "tern.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component; call with (list $ "gateway"). */}}
{{- define "tern.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "tern.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tern.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tern.secretName" -}}
{{- default (printf "%s-auth" (include "tern.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Refuses auth values tern-server would refuse, or that would be
     ignored, with a message naming them; included by the ConfigMap. */}}
{{- define "tern.checkAuth" -}}
{{- $a := .Values.auth }}
{{- if $a.devMode }}
{{- fail "auth.devMode is no longer supported: in dev mode anyone who reaches the API gets a token for any user, and tern-server refuses to start in dev mode on the pods' public listeners. Remove auth.devMode; sign login tokens with the jwt secret from the auth Secret (docs/security.md), or try tern on one machine with ternd" }}
{{- end }}
{{- $secrets := dict "jwtSecret" $a.jwtSecret "jwtSecretPrevious" $a.jwtSecretPrevious "backendToken" $a.backendToken "adminToken" $a.adminToken }}
{{- range $key, $value := $secrets }}
{{- include "tern.checkSecret" (list (printf "auth.%s" $key) $value) }}
{{- if and $value $a.existingSecret }}
{{- fail (printf "auth.%s is set, but auth.existingSecret %q is used instead: put the value in that Secret (key %s), or clear auth.existingSecret" $key $a.existingSecret (index $a (printf "%sKey" $key))) }}
{{- end }}
{{- end }}
{{- if and $a.jwtSecret (eq $a.jwtSecret $a.jwtSecretPrevious) }}
{{- fail "auth.jwtSecretPrevious equals auth.jwtSecret: during a rotation it holds the old secret, otherwise leave it empty" }}
{{- end }}
{{- $keys := list $a.jwtSecretKey $a.jwtSecretPreviousKey $a.backendTokenKey $a.adminTokenKey }}
{{- if ne (len $keys) (len (uniq $keys)) }}
{{- fail (printf "auth.jwtSecretKey, jwtSecretPreviousKey, backendTokenKey and adminTokenKey must differ: %v" $keys) }}
{{- end }}
{{- end }}

{{/* Refuses a secret tern-server would refuse (outside dev mode, which the
     chart never renders): shorter than 32 bytes (values.schema.json) or
     holding a word that marks an example value. Call with (list "auth.jwtSecret" value). */}}
{{- define "tern.checkSecret" -}}
{{- $name := index . 0 }}
{{- $value := index . 1 | default "" | lower }}
{{- range list "change-me" "changeme" "change_me" "secret" "password" "example" "placeholder" }}
{{- if contains . $value }}
{{- fail (printf "%s contains %q, which marks an example value: use 32 random bytes, e.g. `openssl rand -hex 32`, preferably in auth.existingSecret" $name .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A secret from the auth Secret as an environment variable; call with
     (list $ "TERN_JWT_SECRET" "jwtSecretKey" optional). */}}
{{- define "tern.secretEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tern.secretName" $root }}
      key: {{ index $root.Values.auth (index . 2) }}
      {{- if index . 3 }}
      optional: true
      {{- end }}
{{- end }}

{{/* The environment of a tern-server container; call with (list $ "api").
     Each component gets only the secrets it uses: tern-server needs the
     jwt secret in every process; the previous one verifies tokens
     (gateway, API); the back-end and admin tokens guard the API pods'
     back-end listener. */}}
{{- define "tern.env" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 -}}
- name: TERN_CONFIG
  value: /etc/tern/tern.toml
# A pod's name is its node id: stable for a gateway (StatefulSet ordinal),
# unique for the others.
- name: TERN_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{ include "tern.secretEnv" (list $root "TERN_JWT_SECRET" "jwtSecretKey" false) }}
{{- if has $component (list "gateway" "api") }}
# Set only while a signing-key rotation is in progress.
{{ include "tern.secretEnv" (list $root "TERN_JWT_SECRET_PREVIOUS" "jwtSecretPreviousKey" true) }}
{{- end }}
{{- if eq $component "api" }}
# Without a back-end (admin) token in the Secret those calls are refused.
{{ include "tern.secretEnv" (list $root "TERN_BACKEND_TOKEN" "backendTokenKey" true) }}
{{ include "tern.secretEnv" (list $root "TERN_ADMIN_TOKEN" "adminTokenKey" true) }}
{{- end }}
{{- include "tern.archiveEnv" $root }}
{{- end }}

{{/* S3 credentials of the archive, for the pods that open it. */}}
{{- define "tern.archiveEnv" -}}
{{- if .Values.archive.enabled }}
{{- with .Values.archive.s3 }}
{{- if .endpoint }}
- name: AWS_ENDPOINT
  value: {{ .endpoint | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ .region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ required "archive.s3.existingSecret is required when archive.enabled is true" .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by every workload; call with (list $ "gateway"). */}}
{{- define "tern.podMeta" -}}
{{- $root := index . 0 -}}
labels:
  {{- include "tern.labels" $root | nindent 2 }}
  app.kubernetes.io/component: {{ index . 1 }}
  {{- with $root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  # Pods restart when the config they read changes.
  checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
  {{- with $root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "tern.podSpec" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{ end -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The tern-server container; call with (dict "root" $ "component" "api" "services" "api" "resources" ... "ports" list). */}}
{{- define "tern.container" -}}
{{- $root := .root -}}
- name: tern
  image: {{ include "tern.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: [tern-server]
  env:
    {{- include "tern.env" (list $root .component) | nindent 4 }}
    - name: TERN_SERVICES
      value: {{ .services }}
  ports:
    - name: admin
      containerPort: 7403
    {{- range .ports }}
    - name: {{ .name }}
      containerPort: {{ .port }}
    {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    initialDelaySeconds: {{ $root.Values.probes.liveness.initialDelaySeconds }}
    periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/tern
      readOnly: true
    - name: data
      mountPath: /var/lib/tern
{{- end }}

{{- define "tern.volumes" -}}
- name: config
  configMap:
    name: {{ include "tern.fullname" . }}
# Scratch only: every durable byte is in Kafka, CQL or the archive.
- name: data
  emptyDir: {}
{{- end }}

{{/* A PodDisruptionBudget and an optional HPA; call with (list $ "router" .Values.router "Deployment"). */}}
{{- define "tern.pdbAndHpa" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $v := index . 2 }}
{{- $kind := index . 3 }}
{{- if $v.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tern.component" (list $root $component) }}
  labels:
    {{- include "tern.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tern.selectorLabels" (list $root $component) | nindent 6 }}
{{- end }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tern.component" (list $root $component) }}
  labels:
    {{- include "tern.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ $kind }}
    name: {{ include "tern.component" (list $root $component) }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}
