package cluster

import "github.com/prometheus/client_golang/prometheus"

// metricsRegisterer is where the node's cluster series go.
type metricsRegisterer = prometheus.Registerer

// metrics are the cluster's series: streams forwarded between nodes, and
// the state of this node's peer links.
type metrics struct {
	forwarded *prometheus.CounterVec
	presence  *prometheus.CounterVec
}

func newMetrics(reg metricsRegisterer, l *links) *metrics {
	m := &metrics{forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_relay_forwarded_streams_total",
		Help: "Proxied streams carried between nodes: out, sent to the node holding the tunnel; in, served for another node.",
	}, []string{"direction"}), presence: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_relay_presence_writes_total",
		Help: "Writes of this node's presence to the shared store: session rows written (up, Health, down), and statements renewing every lease of the node.",
	}, []string{"kind"})}
	links := func(up bool) func() float64 {
		return func() float64 {
			u, d := l.up()
			if up {
				return float64(u)
			}
			return float64(d)
		}
	}
	reg.MustRegister(m.forwarded, m.presence,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "postern_relay_peer_links", Help: "Peer links to other nodes, by state (down: in backoff after a failure).",
			ConstLabels: prometheus.Labels{"state": "up"}}, links(true)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "postern_relay_peer_links", Help: "Peer links to other nodes, by state (down: in backoff after a failure).",
			ConstLabels: prometheus.Labels{"state": "down"}}, links(false)),
	)
	return m
}

func (m *metrics) sessionRows(n int) { m.presence.WithLabelValues("session").Add(float64(n)) }
func (m *metrics) renewal()          { m.presence.WithLabelValues("renewal").Inc() }

func (m *metrics) forwardedOut() { m.forwarded.WithLabelValues("out").Inc() }
func (m *metrics) forwardedIn()  { m.forwarded.WithLabelValues("in").Inc() }
