{{/*
The pod template shared by the Deployment (poll) and the StatefulSet (push).
*/}}
{{- define "grantbridge.podTemplate" -}}
metadata:
  labels:
    {{- include "grantbridge.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Pods roll when the configuration changes.
    checksum/config: {{ include "grantbridge.configToml" . | sha256sum }}
    {{- if .Values.metrics.prometheusAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.admin.port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "grantbridge.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- if .Values.topologySpread }}
  topologySpreadConstraints:
    {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
    - maxSkew: 1
      topologyKey: {{ . }}
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "grantbridge.selectorLabels" $ | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if .Values.topologySpread }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "grantbridge.selectorLabels" . | nindent 16 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: grantbridge
      image: {{ include "grantbridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config
        - /etc/grantbridge/grantbridge.toml
        - --log-format
        - {{ .Values.logFormat }}
        {{- with .Values.logLevel }}
        - --log-level
        - {{ . | quote }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        - name: GRANTBRIDGE_CONFIG
          value: /etc/grantbridge/grantbridge.toml
        {{- with .Values.traces.otlpEndpoint }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.traces.serviceName }}
        - name: OTEL_SERVICE_NAME
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.traces.headersSecret }}
        - name: OTEL_EXPORTER_OTLP_HEADERS
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $.Values.traces.headersKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: admin
          containerPort: {{ .Values.admin.port }}
          protocol: TCP
        {{- if eq .Values.mode "push" }}
        - name: push
          containerPort: {{ .Values.push.port }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: admin
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/grantbridge
          readOnly: true
        {{- if include "grantbridge.connectorTokenSecret" . }}
        - name: connector-token
          mountPath: /var/run/secrets/grantbridge
          readOnly: true
        {{- end }}
        {{- if eq .Values.mode "push" }}
        - name: push-secret
          mountPath: /var/run/secrets/grantbridge-push
          readOnly: true
        {{- end }}
        {{- if .Values.googleCredentials.existingSecret }}
        - name: google-credentials
          mountPath: {{ .Values.googleCredentials.mountPath }}
          readOnly: true
        {{- end }}
        - name: journal
          mountPath: /var/lib/grantbridge
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "grantbridge.fullname" . }}
        items:
          - key: grantbridge.toml
            path: grantbridge.toml
    {{- with include "grantbridge.connectorTokenSecret" . }}
    - name: connector-token
      secret:
        secretName: {{ . }}
        defaultMode: 0440
        items:
          - key: {{ $.Values.connectorToken.key }}
            path: {{ $.Values.connectorToken.key }}
    {{- end }}
    {{- if eq .Values.mode "push" }}
    - name: push-secret
      secret:
        secretName: {{ include "grantbridge.pushSecret" . | required "mode: push needs push.existingSecret or push.secrets" }}
        defaultMode: 0440
        items:
          {{- range (include "grantbridge.pushSecretKeys" . | fromJsonArray) }}
          - key: {{ . }}
            path: {{ . }}
          {{- end }}
    {{- end }}
    {{- if .Values.googleCredentials.existingSecret }}
    - name: google-credentials
      secret:
        secretName: {{ .Values.googleCredentials.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ .Values.googleCredentials.key }}
            path: {{ .Values.googleCredentials.key }}
    {{- end }}
    {{- if ne .Values.mode "push" }}
    # One journal per pod, gone with the pod: fine in poll mode, where the
    # control plane re-leases what a lost pod held.
    - name: journal
      emptyDir:
        sizeLimit: {{ .Values.journal.sizeLimit }}
    {{- end }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
