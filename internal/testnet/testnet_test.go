//go:build linux

package testnet

import "testing"

// The harness takes a *testing.T without importing testing in its own
// code, so the demo and bench binaries do not link the testing package.
var _ T = (testing.TB)(nil)
