package meshsync

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

func bindToDevice(fd int, device string) error {
	return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, device)
}

// unacked returns how many bytes written to c its peer has not yet
// acknowledged (SIOCOUTQ: unsent plus unacknowledged), or false when c is
// not a TCP socket.
func unacked(c net.Conn) (int, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}
