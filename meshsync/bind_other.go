//go:build !linux

package meshsync

import (
	"errors"
	"net"
)

func bindToDevice(int, string) error {
	return errors.New("binding to a device needs Linux")
}

func unacked(net.Conn) (int, bool) { return 0, false }
