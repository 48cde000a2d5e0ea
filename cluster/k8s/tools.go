//go:build tools

// Package k8s pins the Kubernetes commands that cluster/build.sh compiles for
// the local single-node cluster. Nothing here is compiled into a program.
package k8s

import (
	// etcd 3.6 as selected by k8s.io/kubernetes' own module graph; the
	// apiserver's health checks need endpoints that Debian's etcd 3.4.23 lacks.
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
