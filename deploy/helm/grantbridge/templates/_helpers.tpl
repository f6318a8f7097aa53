{{/*
Names and labels.
*/}}
{{- define "grantbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grantbridge.fullname" -}}
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

{{- define "grantbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grantbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grantbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: connector
{{- end }}

{{- define "grantbridge.labels" -}}
helm.sh/chart: {{ include "grantbridge.chart" . }}
{{ include "grantbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "grantbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "grantbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "grantbridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Secrets: the connector token and the push HMAC secrets.
*/}}
{{- define "grantbridge.connectorTokenSecret" -}}
{{- if .Values.connectorToken.existingSecret }}
{{- .Values.connectorToken.existingSecret }}
{{- else if .Values.connectorToken.value }}
{{- printf "%s-connector-token" (include "grantbridge.fullname" .) }}
{{- end }}
{{- end }}

{{- define "grantbridge.pushSecret" -}}
{{- if .Values.push.existingSecret }}
{{- .Values.push.existingSecret }}
{{- else if .Values.push.secrets }}
{{- printf "%s-push" (include "grantbridge.fullname" .) }}
{{- end }}
{{- end }}

{{/* The keys (file names) of the push secret, as a JSON list. */}}
{{- define "grantbridge.pushSecretKeys" -}}
{{- $keys := list }}
{{- if .Values.push.existingSecret }}
{{- $keys = .Values.push.existingSecretKeys }}
{{- else }}
{{- range $i, $_ := .Values.push.secrets }}
{{- $keys = append $keys (printf "push-secret-%d" (add1 $i)) }}
{{- end }}
{{- end }}
{{- toJson $keys }}
{{- end }}

{{/*
TOML writer. Helm reads numbers in values as float64, and its toToml then
writes `max_attempts = 5.0`, which grantbridge's integer keys refuse; these
helpers write whole numbers as integers. Keys are sorted; a key that is not a
bare TOML key is quoted; strings are written as JSON strings, which are valid
TOML basic strings; null values are left out.
*/}}
{{- define "grantbridge.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "grantbridge.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if kindIs "float64" $v }}{{ if eq (float64 (int64 $v)) $v }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "grantbridge.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v }}{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }},{{ end }} {{ include "grantbridge.toml.key" $k }} = {{ include "grantbridge.toml.value" (get $v $k) }}{{ end }} }
{{- else }}{{ fail (printf "config: cannot write %v (a %s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* A table: its plain keys, then its sub-tables. Args: dict "path" LIST "map" MAP. */}}
{{- define "grantbridge.toml.table" -}}
{{- $m := .map }}
{{- $path := .path }}
{{- $plain := 0 }}
{{- range $k := keys $m | sortAlpha }}
{{- $v := get $m $k }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{- $plain = add1 $plain }}
{{ include "grantbridge.toml.key" $k }} = {{ include "grantbridge.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $m | sortAlpha }}
{{- $v := get $m $k }}
{{- if kindIs "map" $v }}
{{- $sub := append $path $k }}
{{- $quoted := list }}
{{- range $sub }}{{ $quoted = append $quoted (include "grantbridge.toml.key" .) }}{{ end }}
{{- $hasPlain := false }}
{{- range $vv := values $v }}{{ if not (or (kindIs "map" $vv) (kindIs "invalid" $vv)) }}{{ $hasPlain = true }}{{ end }}{{ end }}
{{- if or $hasPlain (not $v) }}

[{{ join "." $quoted }}]
{{- end }}
{{- include "grantbridge.toml.table" (dict "path" $sub "map" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The effective configuration as a dict: .Values.config plus what the chart
manages (listen addresses, the journal path, mounted secret files).
*/}}
{{- define "grantbridge.configDict" -}}
{{- $c := deepCopy (default (dict) .Values.config) }}
{{- $admin := default (dict) (get $c "admin") }}
{{- if eq (toString (get $admin "enabled")) "false" }}
{{- fail "config.admin.enabled: false is not for this chart: its probes (/healthz, /readyz) and metrics scrapes use the admin listener" }}
{{- end }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.admin.port)) }}
{{- $_ := set $c "admin" $admin }}
{{- $journal := default (dict) (get $c "journal") }}
{{- $_ := set $journal "path" "/var/lib/grantbridge/journal.db" }}
{{- $_ := set $c "journal" $journal }}
{{- if hasKey $c "control_plane" }}
{{- $tokenSecret := include "grantbridge.connectorTokenSecret" . }}
{{- if not $tokenSecret }}
{{- fail "config.control_plane is set: give the connector token with connectorToken.existingSecret (recommended) or connectorToken.value" }}
{{- end }}
{{- $cp := get $c "control_plane" }}
{{- $_ := unset $cp "token_env" }}
{{- $_ := set $cp "token_file" (printf "/var/run/secrets/grantbridge/%s" .Values.connectorToken.key) }}
{{- end }}
{{- if eq .Values.mode "push" }}
{{- if not (include "grantbridge.pushSecret" .) }}
{{- fail "mode: push needs HMAC secrets: push.existingSecret (recommended) or push.secrets" }}
{{- end }}
{{- $push := default (dict) (get $c "push") }}
{{- $_ := set $push "listen" (printf "0.0.0.0:%d" (int .Values.push.port)) }}
{{- $files := list }}
{{- range (include "grantbridge.pushSecretKeys" . | fromJsonArray) }}
{{- $files = append $files (printf "/var/run/secrets/grantbridge-push/%s" .) }}
{{- end }}
{{- $_ := set $push "secret_files" $files }}
{{- $_ := unset $push "secret_envs" }}
{{- $_ := set $c "push" $push }}
{{- else if hasKey $c "push" }}
{{- fail "config.push is set but mode is poll: push mode needs mode: push (a StatefulSet with persistent journals; see docs/deployment.md)" }}
{{- end }}
{{- toJson $c }}
{{- end }}

{{/* grantbridge.toml, as mounted. */}}
{{- define "grantbridge.configToml" -}}
{{- if .Values.configToml }}
{{- .Values.configToml }}
{{- else }}
{{- $c := include "grantbridge.configDict" . | fromJson }}
{{- printf "# Rendered by the grantbridge Helm chart from .Values.config.\n" }}
{{- include "grantbridge.toml.table" (dict "path" (list) "map" $c) | trimPrefix "\n" }}
{{ end }}
{{- end }}
