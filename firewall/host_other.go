//go:build !linux

package firewall

import "errors"

// errNotLinux: iptables and sysctls are managed on Linux only; elsewhere
// the package builds for `appliance check` and the unit tests.
var errNotLinux = errors.New("the firewall is managed on Linux only")

// New fails off Linux.
func New(Options) (*Controller, error) { return nil, errNotLinux }

// CleanUpAll has nothing to remove off Linux.
func CleanUpAll() error { return nil }

// ResolveEgress fails off Linux.
func ResolveEgress(string) (string, error) { return "", errNotLinux }
