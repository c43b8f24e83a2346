package status

import (
	"context"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector turns a Report into Prometheus metrics at scrape time, so the
// numbers are as fresh as `wg show` and cost nothing between scrapes.
type collector struct {
	source func() Report
	descs  map[string]*prometheus.Desc
}

func newCollector(source func() Report) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("wgk3s_"+name, help, labels, nil)
	}
	return &collector{source: source, descs: map[string]*prometheus.Desc{
		"handshake": d("peer_last_handshake_seconds", "Seconds since the peer's latest handshake (-1: none yet).", "peer"),
		"rx":        d("peer_receive_bytes_total", "Bytes received from the peer.", "peer"),
		"tx":        d("peer_transmit_bytes_total", "Bytes sent to the peer.", "peer"),
		"reachable": d("peer_reachable", "1 if something came back from the peer within two keepalives and 5 s, over whatever path.", "peer"),
		"relayed":   d("peer_relayed", "1 while the peer is reached through a relay (named by via), 0 when directly.", "peer", "via"),
		"rtt":       d("peer_rtt_seconds", "The last probe's round trip to the peer (0: none yet).", "peer"),
		"fwd":       d("relay_forwarded_packets_total", "Datagrams this node relayed between two other nodes, still encrypted."),
		"fwdBytes":  d("relay_forwarded_bytes_total", "Bytes this node relayed between two other nodes."),
		"fwdDrop":   d("relay_dropped_packets_total", "Datagrams for another node this relay dropped (a limit, or not a node's)."),
		"fwdIdx":    d("relay_index_entries", "Sessions this relay routes (its index table)."),
		"restarts":  d("k3s_restarts_total", "Times k3s was started again: after it exited, or asked for (its command line changed, the WireGuard interface was recreated)."),
		"running":   d("k3s_running", "1 while the k3s child runs."),
		"reloads":   d("reloads_total", "SIGHUP reloads handled."),
		"failures":  d("reload_failures_total", "SIGHUP reloads rejected or rolled back."),
		"mode":      d("wireguard_mode", "The WireGuard implementation in use (value 1).", "mode"),
		"recreated": d("interface_recreations_total", "Times the WireGuard interface was deleted by someone else and recreated."),
		"snapAge":   d("snapshot_age_seconds", "Seconds since the newest snapshot of the master's datastore was taken (the master: its last; the others: the newest they keep)."),
		"snapBytes": d("snapshot_bytes", "Size of that snapshot, sealed."),
		"snapHeld":  d("snapshot_holders", "Nodes that keep the master's newest snapshot (the master only)."),
		"doctor":    d("doctor_problems", "Problems doctor found at its last run (every minute; appliance doctor says what to do), by check and node.", "check", "node"),
	}}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.source()
	m := func(name string, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], t, v, labels...)
	}
	for _, p := range r.Peers {
		m("handshake", prometheus.GaugeValue, p.HandshakeAgeSeconds, p.Name)
		m("rx", prometheus.CounterValue, float64(p.ReceiveBytes), p.Name)
		m("tx", prometheus.CounterValue, float64(p.TransmitBytes), p.Name)
		m("reachable", prometheus.GaugeValue, boolF(p.Reachable), p.Name)
		m("relayed", prometheus.GaugeValue, boolF(p.Path == "relayed"), p.Name, p.Via)
		m("rtt", prometheus.GaugeValue, p.RTTMillis/1000, p.Name)
	}
	if rl := r.Relay; rl != nil {
		m("fwd", prometheus.CounterValue, float64(rl.Packets))
		m("fwdBytes", prometheus.CounterValue, float64(rl.Bytes))
		m("fwdDrop", prometheus.CounterValue, float64(rl.Dropped))
		m("fwdIdx", prometheus.GaugeValue, float64(rl.Entries))
	}
	m("restarts", prometheus.CounterValue, float64(r.K3s.Restarts))
	m("running", prometheus.GaugeValue, boolF(r.K3s.Running))
	m("reloads", prometheus.CounterValue, float64(r.Reloads.Total))
	m("failures", prometheus.CounterValue, float64(r.Reloads.Failures))
	m("mode", prometheus.GaugeValue, 1, r.Mode)
	m("recreated", prometheus.CounterValue, float64(r.Recreations))
	if sn := r.Snapshots; sn != nil && sn.Last != nil {
		m("snapAge", prometheus.GaugeValue, r.Taken.Sub(sn.Last.Taken).Seconds())
		m("snapBytes", prometheus.GaugeValue, float64(sn.Last.Bytes))
		if sn.Role == "taking" {
			m("snapHeld", prometheus.GaugeValue, float64(len(sn.Holders)))
		}
	}
	if r.Health != nil {
		problems := map[[2]string]int{}
		for _, f := range r.Health.Findings {
			if !f.Note {
				problems[[2]string{f.Check, f.Node}]++
			}
		}
		for k, n := range problems {
			m("doctor", prometheus.GaugeValue, float64(n), k[0], k[1])
		}
	}
}

func boolF(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ServeMetrics serves /metrics on l until ctx is cancelled. It uses its own
// registry: only the appliance's metrics and the Go runtime's.
func ServeMetrics(ctx context.Context, l net.Listener, source func() Report) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(source), prometheus.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return serveHTTP(ctx, l, mux)
}
