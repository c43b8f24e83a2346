package tunnel

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"unsafe"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// offloadTUN is a TUN device that batches like Linux's with offloads.
type offloadTUN struct {
	tun.Device
	batch int
}

func (t offloadTUN) BatchSize() int { return t.batch }

// fakeBind is a bind with Linux's batch size whose one receive function
// returns the batches in script, one per call.
type fakeBind struct {
	conn.Bind
	batch  int
	script [][]string // each call's packets
	seen   [][]byte   // the buffers of the last call
}

func (b *fakeBind) BatchSize() int { return b.batch }
func (b *fakeBind) Close() error   { return nil }
func (b *fakeBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return []conn.ReceiveFunc{func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if len(bufs) != b.batch {
			return 0, fmt.Errorf("the wrapped bind got %d buffers, wants its batch of %d", len(bufs), b.batch)
		}
		b.seen = bufs
		if len(b.script) == 0 {
			return 0, fmt.Errorf("script done")
		}
		pkts := b.script[0]
		b.script = b.script[1:]
		for i, p := range pkts {
			sizes[i] = copy(bufs[i], p)
			eps[i] = &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort(fmt.Sprintf("203.0.113.%d:5418", i%250+1))}
		}
		return len(pkts), nil
	}}, port, nil
}

// TestBatchCapIsWhatTheDeviceReports: wireguard-go sizes its reads, pools
// and batches by device.BatchSize(), the larger of the bind's and the TUN
// device's; with both wrapped it reports the cap.
func TestBatchCapIsWhatTheDeviceReports(t *testing.T) {
	for _, tt := range []struct{ cap, want int }{{0, 128}, {8, 8}, {16, 16}, {64, 64}, {128, 128}, {500, 128}} {
		t.Run(fmt.Sprint(tt.cap), func(t *testing.T) {
			var dev tun.Device = offloadTUN{tuntest.NewChannelTUN().TUN(), 128}
			var bind conn.Bind = &fakeBind{batch: 128}
			if tt.cap > 0 {
				dev, bind = cappedTUN{dev, tt.cap}, &cappedBind{bind, tt.cap}
			}
			d := device.NewDevice(dev, bind, device.NewLogger(device.LogLevelSilent, ""))
			defer d.Close()
			if got := d.BatchSize(); got != tt.want {
				t.Errorf("runtime.batch_size %d: the device reports batch size %d, want %d", tt.cap, got, tt.want)
			}
		})
	}
}

// TestCappedReceiveHandsOutEveryPacket: a read of more packets than the
// caller's buffers (UDP GRO splits one coalesced datagram into many) is
// handed out over the next calls, in order, each packet with its endpoint.
func TestCappedReceiveHandsOutEveryPacket(t *testing.T) {
	var script [][]string
	var want []string
	for i, n := range []int{3, 128, 1, 17, 16} {
		var batch []string
		for j := range n {
			batch = append(batch, fmt.Sprintf("read %d packet %d", i, j))
		}
		script = append(script, batch)
		want = append(want, batch...)
	}
	inner := &fakeBind{batch: 128, script: script}
	fns, _, err := (&cappedBind{inner, 16}).Open(0)
	if err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes, eps := make([]int, 16), make([]conn.Endpoint, 16)
	var got []string
	for len(got) < len(want) {
		n, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(got), err)
		}
		if n < 1 || n > 16 {
			t.Fatalf("a receive returned %d packets to a caller with 16 buffers", n)
		}
		for i := range n {
			p := string(bufs[i][:sizes[i]])
			var read, j int
			fmt.Sscanf(p, "read %d packet %d", &read, &j)
			if want := fmt.Sprintf("203.0.113.%d:5418", j%250+1); eps[i] == nil || eps[i].DstToString() != want {
				t.Fatalf("packet %q has endpoint %v, want %s", p, eps[i], want)
			}
			got = append(got, p)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("packets handed out:\n%q\nwant\n%q", got, want)
	}
	if _, err := fns[0](bufs, sizes, eps); err == nil || err.Error() != "script done" {
		t.Errorf("after the script the wrapped bind was not asked again: %v", err)
	}
}

// TestCappedReceiveFitsWithoutCopying: a read that fits the caller's
// buffers lands in them directly.
func TestCappedReceiveFitsWithoutCopying(t *testing.T) {
	inner := &fakeBind{batch: 128, script: [][]string{{"a", "b"}}}
	fns, _, _ := (&cappedBind{inner, 16}).Open(0)
	bufs := make([][]byte, 16)
	backing := make([]byte, 16*8)
	for i := range bufs {
		bufs[i] = backing[i*8 : (i+1)*8]
	}
	sizes, eps := make([]int, 16), make([]conn.Endpoint, 16)
	n, err := fns[0](bufs, sizes, eps)
	if err != nil || n != 2 {
		t.Fatalf("n %d, err %v", n, err)
	}
	for i := range bufs {
		if unsafe.SliceData(inner.seen[i]) != unsafe.SliceData(bufs[i]) {
			t.Fatalf("the wrapped bind's slot %d is not the caller's buffer %d: the packets are copied", i, i)
		}
	}
	if !bytes.Equal(backing[:1], []byte("a")) || !bytes.Equal(backing[8:9], []byte("b")) {
		t.Errorf("the packets were not read into the caller's buffers")
	}
}
