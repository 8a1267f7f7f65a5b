package relay

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postern/postern/relay/broker"
)

// metrics are the node's Prometheus series. Labels are aggregate only
// (reason, direction): no connection id, workspace or secret ever
// becomes a label value.
type metrics struct {
	reg     *prometheus.Registry
	answers *prometheus.CounterVec // refusals by reason, on every listener
	streams prometheus.Counter     // CONNECT and forwarded streams opened
	bytes   *prometheus.CounterVec // proxied bytes by direction
	goaways prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, b *broker.Broker) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		reg: reg,
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_relay_refusals_total",
			Help: "Requests refused, by reason code (proxy, API and tunnel endpoint; refused credentials show as PROXY_AUTH_REQUIRED, AGENT_TOKEN_INVALID and RATE_LIMITED).",
		}, []string{"reason"}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_relay_proxy_streams_total",
			Help: "Proxied streams the agent accepted.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_relay_proxy_bytes_total",
			Help: "Bytes carried by proxied streams; direction is to_target or from_target.",
		}, []string{"direction"}),
		goaways: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_relay_goaways_sent_total",
			Help: "GoAway notices sent to agents (drains).",
		}),
	}
	reg.MustRegister(m.answers, m.streams, m.bytes, m.goaways,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_relay_tunnels",
			Help: "Agent tunnels open on this node.",
		}, func() float64 { return float64(len(b.All())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_relay_streams_active",
			Help: "Proxied streams open on this node.",
		}, func() float64 { return float64(b.ActiveStreams()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// carried counts one finished proxied stream and its bytes.
func (m *metrics) carried(toTarget, fromTarget int64) {
	m.streams.Inc()
	m.bytes.WithLabelValues("to_target").Add(float64(toTarget))
	m.bytes.WithLabelValues("from_target").Add(float64(fromTarget))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// countRefusals wraps a handler and counts its answer's Postern-Reason.
func (m *metrics) countRefusals(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		if reason := w.Header().Get("Postern-Reason"); reason != "" {
			m.answers.WithLabelValues(reason).Inc()
		}
	})
}
