{{/*
The billing pod: its template, shared by the Deployment and the StatefulSet,
and the log volume's mount point.
*/}}

{{/* The log volume's mount point: the directory of logs.file. */}}
{{- define "billing.logDir" -}}
{{- dir .Values.logs.file -}}
{{- end -}}

{{/*
The billing pod template, shared by the Deployment and the StatefulSet so the
two modes cannot drift apart. Usage: include "billing.podTemplate" (dict
"root" $ "logVolume" "claim"|"emptyDir")
*/}}
{{- define "billing.podTemplate" -}}
{{- $root := .root -}}
{{- include "billing.checkConnectionBudget" $root -}}
{{- include "billing.checkShutdown" $root -}}
{{- include "billing.checkScaling" $root -}}
{{- with $root -}}
metadata:
  labels:
    {{- include "billing.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with include "billing.podAnnotations" . | fromYaml }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # The service talks to PostgreSQL and nothing else; it has no use for an
  # API token.
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: billing
      image: {{ include "billing.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: {{ .Values.config.port }}
          protocol: TCP
      env:
        - name: LISTEN_ADDR
          value: {{ printf "0.0.0.0:%d" (int .Values.config.port) | quote }}
        - name: DATABASE_URL
          value: {{ include "billing.databaseUrl" . | quote }}
        {{- $secretName := include "billing.databaseSecretName" . }}
        {{- if $secretName }}
        - name: DATABASE_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ $secretName | quote }}
              key: {{ include "billing.databaseSecretKey" . | quote }}
        {{- end }}
        {{- if include "billing.databaseCaSource" . }}
        # The CA that signed the database server's certificate, for
        # sslmode=verify-ca/verify-full (and checked chains under prefer/require).
        - name: PGSSLROOTCERT
          value: {{ printf "%s/%s" (include "billing.databaseCaDir" .) (include "billing.databaseCaKey" .) | quote }}
        {{- end }}
        - name: DATABASE_POOL_SIZE
          value: {{ .Values.config.databasePoolSize | quote }}
        - name: DATABASE_READ_CONNECTIONS
          value: {{ .Values.config.databaseReadConnections | quote }}
        - name: DATABASE_TIMEOUT_SECS
          value: {{ .Values.config.databaseTimeoutSecs | quote }}
        {{- $pool := int .Values.config.databasePoolSize }}
        {{- with .Values.config.getallMaxConcurrent }}
        {{- if gt (int .) $pool }}
        {{- fail (printf "config.getallMaxConcurrent (%d) must be at most config.databasePoolSize (%d): each listing holds one of the pool's connections" (int .) $pool) }}
        {{- end }}
        - name: GETALL_MAX_CONCURRENT
          value: {{ . | quote }}
        {{- end }}
        - name: GETALL_STALL_TIMEOUT_SECS
          value: {{ .Values.config.getallStallTimeoutSecs | quote }}
        - name: GETALL_TIMEOUT_SECS
          value: {{ .Values.config.getallTimeoutSecs | quote }}
        - name: RUST_LOG
          value: {{ .Values.config.rustLog | quote }}
        - name: LOG_FORMAT
          value: {{ .Values.config.logFormat | quote }}
        - name: HEADER_READ_TIMEOUT_SECS
          value: {{ .Values.config.headerReadTimeoutSecs | quote }}
        - name: BODY_READ_TIMEOUT_SECS
          value: {{ .Values.config.bodyReadTimeoutSecs | quote }}
        - name: MAX_HEADER_BYTES
          value: {{ .Values.config.maxHeaderBytes | quote }}
        - name: MAX_CONNECTIONS
          value: {{ .Values.config.maxConnections | quote }}
        - name: IDEMPOTENCY_KEY_REQUIRED
          value: {{ .Values.config.idempotencyKeyRequired | quote }}
        - name: LOG_WRITE_TIMEOUT_SECS
          value: {{ .Values.config.logWriteTimeoutSecs | quote }}
        - name: SHUTDOWN_TIMEOUT_SECS
          value: {{ .Values.config.shutdownTimeoutSecs | quote }}
        - name: METRICS_ENABLED
          value: {{ .Values.metrics.enabled | quote }}
        {{- if .Values.logs.enabled }}
        - name: LOG_FILE
          value: {{ .Values.logs.file | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      # The pod leaves the Services' endpoints when its deletion starts, but
      # kube-proxy on every node, and clients holding a connection, take a
      # moment to notice: billing keeps serving for preStopSleepSeconds, then
      # gets SIGTERM and drains. An exec of the image's sleep (busybox's in
      # the distroless :debug image), not the sleep action of Kubernetes 1.30,
      # so the chart keeps working on 1.27-1.29.
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ .Values.preStopSleepSeconds | quote }}]
      {{- end }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- $caSource := include "billing.databaseCaSource" . }}
      {{- if or .Values.logs.enabled $caSource }}
      volumeMounts:
        {{- if .Values.logs.enabled }}
        - name: log
          mountPath: {{ include "billing.logDir" . | quote }}
        {{- end }}
        {{- if $caSource }}
        - name: database-ca
          mountPath: {{ include "billing.databaseCaDir" . | quote }}
          readOnly: true
        {{- end }}
      {{- end }}
  {{- $emptyDirLog := and .Values.logs.enabled (eq $.logVolume "emptyDir") }}
  {{- if or $emptyDirLog $caSource }}
  volumes:
    {{- if $emptyDirLog }}
    # A Deployment's replicas cannot each own a claim: the log lives as long
    # as the pod. StatefulSet mode gives every pod a volume of its own.
    - name: log
      emptyDir:
        sizeLimit: {{ .Values.logs.persistence.size | quote }}
    {{- end }}
    {{- $caKey := include "billing.databaseCaKey" . }}
    {{- if eq $caSource "secret" }}
    # Only the certificate: a CloudNativePG "<cluster>-ca" Secret also holds
    # the CA's private key, which billing must never see.
    - name: database-ca
      secret:
        secretName: {{ include "billing.databaseCaName" . | quote }}
        items:
          - key: {{ $caKey | quote }}
            path: {{ $caKey | quote }}
    {{- else if eq $caSource "configMap" }}
    - name: database-ca
      configMap:
        name: {{ include "billing.databaseCaName" . | quote }}
        items:
          - key: {{ $caKey | quote }}
            path: {{ $caKey | quote }}
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not (hasKey $c "labelSelector") }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "billing.selectorLabels" $root | fromYaml)) }}
    {{- end }}
    {{- list $c | toYaml | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}
