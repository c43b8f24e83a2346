package meshsync

import (
	"golang.org/x/sys/unix"
)

func bindToDevice(fd int, device string) error {
	return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, device)
}
