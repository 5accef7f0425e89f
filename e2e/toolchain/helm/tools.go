//go:build tools

// The binary this wrapper builds (kept in go.mod by this import).
package tools

import _ "helm.sh/helm/v3/cmd/helm"
