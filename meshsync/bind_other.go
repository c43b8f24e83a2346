//go:build !linux

package meshsync

import (
	"errors"
)

func bindToDevice(int, string) error {
	return errors.New("binding to a device needs Linux")
}
