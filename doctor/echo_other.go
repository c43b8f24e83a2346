//go:build !linux

package doctor

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Echoer needs Linux's raw sockets.
type Echoer struct{}

// NewEchoer fails off Linux.
func NewEchoer(string, netip.Addr) (*Echoer, error) {
	return nil, errors.New("ICMP probes need Linux")
}

func (e *Echoer) Close() error { return nil }

func (e *Echoer) Echo(context.Context, netip.Addr, int, time.Duration) (time.Duration, error) {
	return 0, errors.New("ICMP probes need Linux")
}

func (e *Echoer) LargestEcho(context.Context, netip.Addr, []int, int, time.Duration) int { return 0 }
