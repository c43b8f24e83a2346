package tunnel

import (
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// wireguard-go reads and sends packets in batches of the larger of its
// bind's and its TUN device's BatchSize (128 each on Linux with offloads),
// and every packet in flight holds a 64 KiB buffer: the batch size bounds
// how many packets one read takes in, so it is most of the appliance's
// memory under load. cappedTUN and cappedBind report at most a cap, so
// that device.NewDevice sizes its reads, pools and queued batches by it.

// cappedTUN is a tun.Device whose BatchSize is at most max. The kernel must
// not hand it TSO super-packets of more segments than that: the caller sets
// wg0's gso_max_segs to max (a TUN read splits a super-packet into one
// buffer per segment and drops it when there are too few).
type cappedTUN struct {
	tun.Device
	max int
}

func (t cappedTUN) BatchSize() int { return min(t.Device.BatchSize(), t.max) }

// cappedBind is a conn.Bind whose BatchSize is at most max. Its receive
// functions still give the wrapped bind a full batch of buffers: with UDP
// GRO, StdNetBind reads coalesced datagrams into the last slots of a batch
// of IdealBatchSize and splits them into the slots before, so it cannot
// take fewer. The caller's buffers are the first slots (nothing is copied
// when a read fits them); what one read returns beyond them is copied out
// by the next calls.
type cappedBind struct {
	conn.Bind
	max int
}

func (b *cappedBind) BatchSize() int { return min(b.Bind.BatchSize(), b.max) }

func (b *cappedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil || b.Bind.BatchSize() <= b.max {
		return fns, actual, err
	}
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = (&receiver{inner: fn, batch: b.Bind.BatchSize()}).receive
	}
	return out, actual, nil
}

// receiver adapts one receive function of the wrapped bind to callers
// with fewer buffers. Each receive function is called by one goroutine at
// a time, so it needs no lock.
type receiver struct {
	inner conn.ReceiveFunc
	batch int

	bufs          [][]byte // the caller's buffers, then spare ones of our own
	sizes         []int
	eps           []conn.Endpoint
	callers       int // how many of bufs are the caller's
	next, pending int // bufs[next:pending] are read and not yet handed out
}

func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if r.next < r.pending {
		n := 0
		for ; n < len(bufs) && r.next < r.pending; n++ {
			sizes[n] = copy(bufs[n], r.bufs[r.next][:r.sizes[r.next]])
			eps[n] = r.eps[r.next]
			r.eps[r.next] = nil
			r.next++
		}
		return n, nil
	}
	if len(bufs) == 0 || len(bufs) >= r.batch {
		return r.inner(bufs, sizes, eps)
	}
	if r.bufs == nil || r.callers != len(bufs) {
		r.bufs, r.callers = make([][]byte, r.batch), len(bufs)
		for i := len(bufs); i < r.batch; i++ {
			r.bufs[i] = make([]byte, len(bufs[0]))
		}
		r.sizes, r.eps = make([]int, r.batch), make([]conn.Endpoint, r.batch)
	}
	copy(r.bufs, bufs)
	n, err := r.inner(r.bufs, r.sizes, r.eps)
	if err != nil {
		return 0, err
	}
	k := min(n, len(bufs))
	copy(sizes, r.sizes[:k])
	copy(eps, r.eps[:k])
	clear(r.eps[:k])
	r.next, r.pending = k, n
	return k, nil
}
