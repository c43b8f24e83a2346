package firewall

import (
	"encoding/hex"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy iptables (CentOS 7's) sends no change notification, and a full
// iptables-save every few seconds costs a fork and the whole table each
// time (kube-proxy's rules included). The kernel answers a cheaper
// question without a program: IPT_SO_GET_INFO gives a table's number of
// rules, its size in bytes and where each built-in chain starts. Any rule
// added or deleted changes them, so the controller asks every
// legacyProbeEvery and runs iptables-save only when they moved (and every
// legacyFullEvery, for a rule replaced by another of the same size).

// iptSoGetInfo is IPT_SO_GET_INFO (linux/netfilter_ipv4/ip_tables.h:
// IPT_BASE_CTL 64 + 0).
const iptSoGetInfo = 64

// iptGetinfo is struct ipt_getinfo: the table's name, then valid_hooks,
// hook_entry[5], underflow[5], num_entries, size (all u32).
type iptGetinfo struct {
	name [32]byte
	rest [13]uint32
}

// legacyInfo summarises tables as the kernel describes them.
func legacyInfo(tables []string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return "", fmt.Errorf("a raw socket for IPT_SO_GET_INFO: %w", err)
	}
	defer unix.Close(fd)
	var sum []byte
	for _, t := range tables {
		var info iptGetinfo
		copy(info.name[:], t)
		size := uint32(unsafe.Sizeof(info))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_IP, iptSoGetInfo,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			return "", fmt.Errorf("IPT_SO_GET_INFO %s: %w", t, errno)
		}
		sum = append(sum, unsafe.Slice((*byte)(unsafe.Pointer(&info.rest)), unsafe.Sizeof(info.rest))...)
	}
	return hex.EncodeToString(sum), nil
}

// legacyProbeEvery is how often the legacy tables' summaries are read: a
// deleted rule is back within it (plus the check's settle).
const legacyProbeEvery = 2 * time.Second

// watchLegacy notifies when the legacy tables' summaries change, like the
// nf_tables watch does from the kernel's own notifications.
func watchLegacy(done <-chan struct{}) (<-chan struct{}, error) {
	last, err := legacyInfo(tables)
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	go func() {
		tick := time.NewTicker(legacyProbeEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			cur, err := legacyInfo(tables)
			if err != nil || cur == last {
				continue
			}
			last = cur
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, nil
}
