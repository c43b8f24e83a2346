package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// netlinkHost is the real host, over rtnetlink.
type netlinkHost struct{}

func (netlinkHost) linkInfo(name string) (linkInfo, bool, error) {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return linkInfo{}, false, nil
	}
	if err != nil {
		return linkInfo{}, false, err
	}
	return linkInfo{Kind: l.Type(), Index: l.Attrs().Index}, true, nil
}

func (h netlinkHost) deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

func (netlinkHost) createKernelLink(name string, mtu int) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = name, mtu
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("cannot create a WireGuard link (%w)", err)
	}
	return nil
}

func (netlinkHost) setMTU(name string, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetMTU(l, mtu)
}

func (netlinkHost) setUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

func (netlinkHost) replaceAddress(name string, p netip.Prefix) error {
	return addrOp(name, p, netlink.AddrReplace)
}

func (netlinkHost) deleteAddress(name string, p netip.Prefix) error {
	return addrOp(name, p, netlink.AddrDel)
}

func addrOp(name string, p netip.Prefix, op func(netlink.Link, *netlink.Addr) error) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	return op(l, &netlink.Addr{IPNet: ipn})
}

// userspace is wireguard-go running on a TUN device, with the UAPI socket
// /var/run/wireguard/<name>.sock served so that wgctrl and the stock `wg`
// tool configure and show it exactly as they would a kernel link.
type userspace struct {
	name string
	dev  *device.Device
	log  *slog.Logger

	mu      sync.Mutex
	uapi    net.Listener
	closing bool
	done    chan struct{}
}

func (netlinkHost) createUserspace(cfg Config, log *slog.Logger, mesh *Mesh) (io.Closer, error) {
	name, mtu, batch := cfg.Name, cfg.MTU, cfg.BatchSize
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %s: %w (is /dev/net/tun present and are we root?)", name, err)
	}
	var inner conn.Bind = conn.NewDefaultBind()
	if mesh != nil {
		inner = newMeshBind(inner, mesh)
	}
	dev, bind, err := capBatches(name, tdev, inner, batch)
	if err != nil {
		tdev.Close()
		return nil, err
	}
	if cfg.Inflight > 0 {
		var once sync.Once
		stalled := func() {
			once.Do(func() {
				log.Warn("wireguard-go held runtime.inflight_packets packets for a second and sent or wrote none of them; "+
					"reads went on without the bound (logged once)", "interface", name, "inflight_packets", cfg.Inflight)
			})
		}
		out, in := newInflight(cfg.Inflight, stalled), newInflight(cfg.Inflight, stalled)
		dev, bind = limitedTUN{dev, out, in}, &limitedBind{bind, out, in}
	}
	u := &userspace{name: name, log: log, done: make(chan struct{})}
	u.dev = device.NewDevice(dev, bind, wgLogger(log, name))
	// Up now, not when the TUN reports the link up: a device that is up
	// binds its UDP port when the listen port is set, so a busy port fails
	// the configuration at once. Brought up later by the TUN's event, it
	// would only log that it cannot bind and run with no socket.
	if err := u.dev.Up(); err != nil {
		u.dev.Close()
		return nil, fmt.Errorf("starting wireguard-go: %w", err)
	}
	log.Info("wireguard-go memory bounds", "interface", name, "batch_size", u.dev.BatchSize(), "inflight_packets", cfg.Inflight)
	if err := u.listen(); err != nil {
		u.dev.Close()
		return nil, err
	}
	go u.serve()
	return u, nil
}

// listen opens the UAPI socket. ipc.UAPIOpen removes a stale socket left by
// a killed process and refuses one that a live process still serves.
func (u *userspace) listen() error {
	f, err := ipc.UAPIOpen(u.name)
	if err != nil {
		return fmt.Errorf("opening the UAPI socket for %s: %w (is another appliance or wireguard-go running %s?)", u.name, err, u.name)
	}
	l, err := ipc.UAPIListen(u.name, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("listening on the UAPI socket for %s: %w", u.name, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closing {
		// Close took the listener before this one: it would never be
		// closed, and serve would wait on it for good (and Close on serve).
		l.Close()
		return errClosing
	}
	u.uapi = l
	return nil
}

// errClosing: the device is being closed; its socket is not made again.
var errClosing = errors.New("the userspace device is closing")

// serve answers UAPI requests until Close. If someone deletes the socket
// (wireguard-go's own signal to exit), it is recreated: the appliance, not a
// stray `rm`, decides when wg0 goes away.
func (u *userspace) serve() {
	defer close(u.done)
	for {
		u.mu.Lock()
		l := u.uapi
		u.mu.Unlock()
		c, err := l.Accept()
		if err == nil {
			go u.dev.IpcHandle(c)
			continue
		}
		u.mu.Lock()
		closing := u.closing
		u.mu.Unlock()
		if closing {
			return
		}
		u.log.Warn("UAPI socket lost; recreating it", "interface", u.name, "err", err)
		l.Close()
		for attempt := 1; ; attempt++ {
			if err := u.listen(); err == nil {
				break
			} else if errors.Is(err, errClosing) {
				return
			} else if attempt == 10 {
				u.log.Error("cannot recreate the UAPI socket; wg show will not see the device", "interface", u.name, "err", err)
				return
			}
			time.Sleep(time.Second)
		}
	}
}

// Close stops the UAPI server (removing the socket) and wireguard-go, which
// removes the TUN device.
func (u *userspace) Close() error {
	u.mu.Lock()
	u.closing = true
	l := u.uapi
	u.mu.Unlock()
	err := l.Close()
	<-u.done
	u.dev.Close()
	os.Remove(socketPath(u.name)) // in case the listener did not unlink it
	return err
}

// socketPath is where wireguard-go serves UAPI, fixed by its ipc package.
func socketPath(name string) string { return "/var/run/wireguard/" + name + ".sock" }

// wgLogger adapts wireguard-go's printf logger to slog, prefixed like
// wireguard-go's own "(wg0) ". Its verbose output is debug level.
//
// A peer without endpoint (an agent behind NAT, reached once it connects)
// makes wireguard-go log "no known endpoint for peer" as an error at every
// keepalive; that state is logged once per peer, at info level.
func wgLogger(log *slog.Logger, name string) *device.Logger {
	prefix := "(" + name + ") "
	var once sync.Map
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			// A TUN read of a super-packet with more segments than the batch
			// drops it; wireguard-go only says so verbosely.
			if strings.HasPrefix(format, "Dropped some packets from multi-segment read") {
				if _, seen := once.LoadOrStore("segments", true); !seen {
					log.Warn(prefix + msg + "; packets from the kernel had more segments than a batch holds (logged once); fix: if runtime.batch_size is set, raise or remove it")
				}
				return
			}
			log.Debug(prefix + msg)
		},
		Errorf: func(format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			if strings.Contains(msg, "no known endpoint for peer") {
				if _, seen := once.LoadOrStore(msg, true); !seen {
					log.Info(prefix + msg + "; it is reached once it connects (logged once for this peer)")
				}
				return
			}
			log.Error(prefix + msg)
		},
	}
}

func (netlinkHost) addressOwners(addr netip.Addr) ([]string, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr {
			continue
		}
		name := fmt.Sprintf("index %d", a.LinkIndex)
		if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		out = append(out, name)
	}
	return out, nil
}

func blackhole(network netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: network.Addr().AsSlice(), Mask: net.CIDRMask(network.Bits(), network.Addr().BitLen())},
		Type:     unix.RTN_BLACKHOLE,
		Priority: BlackholeMetric,
		Protocol: unix.RTPROT_STATIC,
		Table:    unix.RT_TABLE_MAIN,
	}
}

func (netlinkHost) replaceBlackhole(network netip.Prefix) error {
	return netlink.RouteReplace(blackhole(network))
}

func (netlinkHost) deleteBlackhole(network netip.Prefix) error {
	err := netlink.RouteDel(blackhole(network))
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

func (netlinkHost) blackholes() ([]netip.Prefix, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Type: unix.RTN_BLACKHOLE, Priority: BlackholeMetric}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE|netlink.RT_FILTER_PRIORITY)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		bits, _ := r.Dst.Mask.Size()
		if ok {
			out = append(out, netip.PrefixFrom(addr.Unmap(), bits))
		}
	}
	return out, nil
}

func (netlinkHost) watchLinks(done <-chan struct{}) (<-chan struct{}, error) {
	updates := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{}); err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	go func() {
		for u := range updates {
			if u.Header.Type != unix.RTM_DELLINK {
				continue
			}
			select {
			case out <- struct{}{}:
			default: // one pending wake-up is enough
			}
		}
	}()
	return out, nil
}

// capBatches wraps the TUN device and the bind so that wireguard-go's batch
// size is at most batch (0: leave its own). With TUN offloads the kernel
// hands wg0 TSO/USO super-packets that one read splits into a buffer per
// segment, so wg0's gso_max_segs is lowered to the cap first: the kernel
// then segments larger ones itself before they reach the TUN device.
func capBatches(name string, dev tun.Device, bind conn.Bind, batch int) (tun.Device, conn.Bind, error) {
	if batch <= 0 {
		return dev, bind, nil
	}
	if dev.BatchSize() > batch {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetGSOMaxSegs(l, batch)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("setting gso_max_segs %d on %s for runtime.batch_size: %w (this kernel may not allow it; fix: remove runtime.batch_size)", batch, name, err)
		}
	}
	return cappedTUN{dev, batch}, &cappedBind{bind, batch}, nil
}
