{{- define "rollgate.labels" -}}
app.kubernetes.io/name: rollgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "rollgate.selector" -}}
app.kubernetes.io/name: rollgate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rollgate.serviceAccount" -}}
{{- default .Release.Name .Values.serviceAccount.name }}
{{- end }}

{{- define "rollgate.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}
