package firewall

import (
	"errors"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// watchNFTables sends a value, without blocking, whenever nf_tables
// changes in this network namespace (any table, chain or rule: what
// iptables-nft, nft or firewalld do), until done is closed. The kernel
// multicasts every nf_tables transaction to NFNLGRP_NFTABLES; the legacy
// iptables backend has no such notification and is polled instead.
func watchNFTables(done <-chan struct{}) (<-chan struct{}, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)})
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	go func() {
		<-done
		conn.Close() // ends Receive
	}()
	go func() {
		for {
			if _, err := conn.Receive(); err != nil {
				select {
				case <-done:
					return
				default:
				}
				// An overrun (ENOBUFS) loses events, not the socket: treat
				// it as a change.
				if !errors.Is(err, unix.ENOBUFS) {
					return
				}
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}
