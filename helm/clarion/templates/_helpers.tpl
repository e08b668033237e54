{{/* Names, labels and the shared pod spec of every Clarion workload. */}}

{{- define "clarion.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "clarion.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "clarion.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clarion.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "clarion.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "clarion.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The mode, checked: anything else than the two is a typo. */}}
{{- define "clarion.mode" -}}
{{- if not (has .Values.mode (list "embedded" "distributed")) -}}
{{- fail (printf "mode: %q is neither embedded nor distributed" .Values.mode) -}}
{{- end -}}
{{- .Values.mode -}}
{{- end -}}

{{/* Where the data directory and the keyring are mounted. */}}
{{- define "clarion.dataDir" -}}/var/lib/clarion{{- end -}}
{{- define "clarion.keyringDir" -}}/etc/clarion/keyring{{- end -}}

{{/*
The typed configuration as TOML: what the chart derives (data directory,
listeners, log, store, keyring) under the operator's `config`, which wins.
Helm reads every number of values as a float, and toToml writes 2 as 2.0
and 3600000 as 3.6e+06, which Clarion's integer keys refuse: whole numbers
become integers first (float keys accept integers).
*/}}
{{- define "clarion.toml" -}}
{{- $mode := include "clarion.mode" . -}}
{{- $cfg := dict
  "data-dir" (include "clarion.dataDir" .)
  "grpc" (dict "listen" (printf "0.0.0.0:%v" .Values.ports.grpc))
  "http" (dict "listen" (printf "0.0.0.0:%v" .Values.ports.http) "internal-listen" (printf "0.0.0.0:%v" .Values.ports.metrics))
  "log" (dict "partitions" .Values.partitions)
-}}
{{- if eq $mode "distributed" -}}
{{- if not .Values.kafka.brokers -}}
{{- fail "kafka.brokers: distributed mode needs at least one Kafka broker (host:port)" -}}
{{- end -}}
{{- if not .Values.store.url -}}
{{- fail "store.url: distributed mode needs the shared store, scylla://HOST:PORT/KEYSPACE" -}}
{{- end -}}
{{- if not .Values.keyring.existingSecret -}}
{{- fail "keyring.existingSecret: distributed mode needs a master keyring Secret (every pod must open what another sealed)" -}}
{{- end -}}
{{- $url := printf "kafka://%s" (join "," .Values.kafka.brokers) -}}
{{- $query := list -}}
{{- if .Values.kafka.fetchWaitMs -}}
{{- $query = append $query (printf "fetch_wait_ms=%v" .Values.kafka.fetchWaitMs) -}}
{{- end -}}
{{- if not (kindIs "invalid" .Values.kafka.lingerMs) -}}
{{- $query = append $query (printf "linger_ms=%v" .Values.kafka.lingerMs) -}}
{{- end -}}
{{- if $query -}}
{{- $url = printf "%s?%s" $url (join "&" $query) -}}
{{- end -}}
{{- $_ := set $cfg.log "url" $url -}}
{{- $_ := set $cfg "store" (dict "url" .Values.store.url) -}}
{{- if eq .Values.kafka.partitionAssignment "group" -}}
{{- $runtime := dict "partition-assignment" "group" -}}
{{- if .Values.kafka.groupSessionTimeoutMs -}}
{{- $_ := set $runtime "group-session-timeout-ms" .Values.kafka.groupSessionTimeoutMs -}}
{{- end -}}
{{- $_ := set $cfg "runtime" $runtime -}}
{{- end -}}
{{- else if eq .Values.kafka.partitionAssignment "group" -}}
{{- fail "kafka.partitionAssignment: group needs mode: distributed (Kafka); the embedded pod runs every partition" -}}
{{- end -}}
{{- if .Values.keyring.existingSecret -}}
{{- if not .Values.keyring.keyIds -}}
{{- fail "keyring.keyIds: name the key ids (data keys) of keyring.existingSecret" -}}
{{- end -}}
{{- $keys := dict -}}
{{- range .Values.keyring.keyIds -}}
{{- $_ := set $keys . (printf "file:%s/%s" (include "clarion.keyringDir" $) .) -}}
{{- end -}}
{{- $secrets := dict "keys" $keys -}}
{{- if .Values.keyring.activeKeyId -}}
{{- $_ := set $secrets "active-key-id" .Values.keyring.activeKeyId -}}
{{- end -}}
{{- $_ := set $cfg "secrets" $secrets -}}
{{- end -}}
{{- $merged := mergeOverwrite $cfg (deepCopy .Values.config) -}}
{{- include "clarion.wholeNumbers" $merged -}}
{{- toToml $merged -}}
{{- end -}}

{{/* Turns whole float64 numbers of a tree into int64, in place. */}}
{{- define "clarion.wholeNumbers" -}}
{{- range $k, $v := . -}}
{{- if and (kindIs "float64" $v) (eq $v (floor $v)) -}}
{{- $_ := set $ $k (int64 $v) -}}
{{- else if kindIs "map" $v -}}
{{- include "clarion.wholeNumbers" $v -}}
{{- else if kindIs "slice" $v -}}
{{- $out := list -}}
{{- range $v -}}
{{- if kindIs "map" . -}}
{{- include "clarion.wholeNumbers" . -}}
{{- $out = append $out . -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- $out = append $out (int64 .) -}}
{{- else -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $ $k $out -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* CLARION__SECTION__KEY of a dotted config key. */}}
{{- define "clarion.envName" -}}
{{- printf "CLARION__%s" (. | replace "-" "_" | replace "." "__" | upper) -}}
{{- end -}}

{{/*
The pod template of one workload. Arguments: dict "root" $ "component" NAME
"args" LIST "grpc" BOOL "resources" MAP "extraVolume" MAP-or-nil.
*/}}
{{- define "clarion.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "clarion.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed configuration rolls the pods.
    checksum/config: {{ include "clarion.toml" $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  # SIGTERM drains: servers stop accepting, runners finish their batch.
  terminationGracePeriodSeconds: 30
  containers:
    - name: clarion
      image: "{{ $v.image.repository }}:{{ $v.image.tag | default $root.Chart.AppVersion }}"
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        - --config
        - /etc/clarion/clarion.toml
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      ports:
        {{- if .grpc }}
        - name: grpc
          containerPort: {{ $v.ports.grpc }}
          protocol: TCP
        {{- end }}
        - name: http
          containerPort: {{ $v.ports.http }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $v.ports.metrics }}
          protocol: TCP
      env:
        - name: CLARION_LOG
          value: info
        {{- /* Only the pods serving the API check the admin token. */}}
        {{- if and .grpc $v.adminToken.existingSecret }}
        - name: {{ include "clarion.envName" "auth.admin-token" }}
          valueFrom:
            secretKeyRef:
              name: {{ $v.adminToken.existingSecret }}
              key: {{ $v.adminToken.key }}
        {{- end }}
        {{- range $v.secretEnv }}
        - name: {{ include "clarion.envName" (required "secretEnv[].configKey is required" .configKey) }}
          valueFrom:
            secretKeyRef:
              name: {{ required "secretEnv[].secretName is required" .secretName }}
              key: {{ required "secretEnv[].secretKey is required" .secretKey }}
        {{- end }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml $v.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml $v.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/clarion/clarion.toml
          subPath: clarion.toml
          readOnly: true
        - name: data
          mountPath: {{ include "clarion.dataDir" $root }}
        - name: tmp
          mountPath: /tmp
        {{- if $v.keyring.existingSecret }}
        - name: keyring
          mountPath: {{ include "clarion.keyringDir" $root }}
          readOnly: true
        {{- end }}
        {{- with .extraVolume }}
        - name: {{ .name }}
          mountPath: {{ .mountPath }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "clarion.fullname" $root }}-config
    - name: data
      {{- if .dataClaim }}
      persistentVolumeClaim:
        claimName: {{ .dataClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: tmp
      emptyDir: {}
    {{- if $v.keyring.existingSecret }}
    - name: keyring
      secret:
        secretName: {{ $v.keyring.existingSecret }}
        # 0440: the pod's group (fsGroup) reads; decimal, as YAML 1.1 and 1.2 read octal differently.
        defaultMode: 288
    {{- end }}
    {{- with .extraVolume }}
    - name: {{ .name }}
      {{- if .claim }}
      persistentVolumeClaim:
        claimName: {{ .claim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
