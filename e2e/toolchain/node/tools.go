//go:build tools

// The node binaries this wrapper builds (kept in go.mod by this import).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
