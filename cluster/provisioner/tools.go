//go:build tools

// Package provisioner pins minikube's hostpath storage provisioner, which
// cluster/build.sh compiles for the local cluster. (`go install
// k8s.io/minikube/cmd/storage-provisioner@v1.38.1` would do the same, but it
// asks the module proxy for k8s.io/minikube's version list, which the proxy
// this project reaches refuses with 403.)
package provisioner

import _ "k8s.io/minikube/cmd/storage-provisioner"
