//go:build tools

// Package cnpg pins the CloudNativePG operator, which cluster/build.sh compiles
// for the local cluster's high-availability scenario. (`go install
// github.com/cloudnative-pg/cloudnative-pg/cmd/manager@v1.30.0` would do the
// same, but it asks the module proxy for the module's version list to check
// for a deprecation, which the proxy this project reaches refuses with 403.)
package cnpg

import _ "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"
