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

{{/* The environment every tern-server container gets. */}}
{{- define "tern.env" -}}
- name: TERN_CONFIG
  value: /etc/tern/tern.toml
# A pod's name is its node id: stable for a gateway (StatefulSet ordinal),
# unique for the others.
- name: TERN_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: TERN_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "tern.secretName" . }}
      key: {{ .Values.auth.jwtSecretKey }}
{{- if or .Values.auth.adminToken .Values.auth.existingSecret }}
- name: TERN_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tern.secretName" . }}
      key: {{ .Values.auth.adminTokenKey }}
      # An existing Secret may hold no admin token: the admin API stays off.
      optional: true
{{- end }}
{{- include "tern.archiveEnv" . }}
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

{{/* The tern-server container; call with (dict "root" $ "services" "gateway" "resources" ... "ports" list). */}}
{{- define "tern.container" -}}
{{- $root := .root -}}
- name: tern
  image: {{ include "tern.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: [tern-server]
  env:
    {{- include "tern.env" $root | nindent 4 }}
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
