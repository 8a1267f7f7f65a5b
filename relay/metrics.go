package relay

import (
	"bufio"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postern/postern/protocol"
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
	// handshakes counts tunnel requests by the pacer's verdict.
	handshakes *prometheus.CounterVec
	// challenges counts 407 answers to proxy requests that carried no
	// credentials at all: a client's first request (git and most HTTP
	// libraries send one) asking which scheme to use, not a refusal.
	challenges prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		reg: reg,
		answers: counterVec("postern_relay_refusals_total",
			"Requests refused, by reason code (proxy, API and tunnel endpoint; refused credentials show as PROXY_AUTH_REQUIRED, API_AUTH_REQUIRED, AGENT_TOKEN_INVALID and RATE_LIMITED; a reason outside the reason table as OTHER). A proxy request without any credentials is a challenge, counted apart.",
			"reason"),
		streams: counter("postern_relay_proxy_streams_total", "Proxied streams the agent accepted."),
		bytes: counterVec("postern_relay_proxy_bytes_total",
			"Bytes carried by proxied streams; direction is to_target or from_target.", "direction"),
		handshakes: counterVec("postern_relay_tunnel_handshakes_total",
			"Tunnel requests by the handshake pacer's verdict: admitted (went on to authenticate and upgrade) or paced (answered 503 RELAY_UNAVAILABLE with a Retry-After slot).", "result"),
		goaways: counter("postern_relay_goaways_sent_total", "GoAway notices sent to agents (drains)."),
		challenges: counter("postern_relay_proxy_auth_challenges_total",
			"407 answers to proxy requests that carried no Proxy-Authorization: a client's first request asking how to authenticate."),
	}
	reg.MustRegister(m.answers, m.handshakes, m.streams, m.bytes, m.goaways, m.challenges,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// watch adds the series read from the broker.
func (m *metrics) watch(b *broker.Broker) {
	m.reg.MustRegister(
		gauge("postern_relay_tunnels", "Agent tunnels open on this node.",
			func() float64 { return float64(len(b.All())) }),
		gauge("postern_relay_streams_active", "Proxied streams open on this node.",
			func() float64 { return float64(b.ActiveStreams()) }),
	)
}

// counter, counterVec and gauge keep each series above to its name and
// help: none needs more options, nor more than one label.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func counterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
}

func gauge(name, help string, value func() float64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value)
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
		cw := &countingWriter{ResponseWriter: w, m: m, r: r}
		next.ServeHTTP(cw, r)
		cw.count()
	})
}

// countingWriter counts the answer's refusal once: when the handler takes
// the connection over (a refusal written with its reason in the status
// line, which then lingers while the client reads it), or when the
// handler returns.
type countingWriter struct {
	http.ResponseWriter
	m       *metrics
	r       *http.Request
	counted bool
}

func (w *countingWriter) count() {
	if w.counted {
		return
	}
	w.counted = true
	if reason := w.Header().Get("Postern-Reason"); reason != "" {
		w.m.answered(protocol.Reason(reason), w.r.Header.Get("Proxy-Authorization") != "")
	}
}

// Hijack counts, then hands the connection over.
func (w *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.count()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// answered counts one proxy refusal of reason: a challenge when the
// request presented no credentials and was asked for them.
func (m *metrics) answered(reason protocol.Reason, presented bool) {
	if reason == protocol.ProxyAuthRequired && !presented {
		m.challenges.Inc()
		return
	}
	m.refused(reason)
}

// refused counts one refusal of reason.
func (m *metrics) refused(reason protocol.Reason) {
	m.answers.WithLabelValues(reasonLabel(string(reason))).Inc()
}

// otherReason is the label of every reason outside the reason table: an
// agent may pass on a reason code this relay does not know (spec section
// 11), and must not add a series for each one it makes up.
const otherReason = "OTHER"

// reasonLabel is reason when the reason table has it, else OTHER.
func reasonLabel(reason string) string {
	if protocol.Reason(reason).Known() {
		return reason
	}
	return otherReason
}
