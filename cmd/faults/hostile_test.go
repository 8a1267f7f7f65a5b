package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/webhook"
)

// Budgets of TestFaultHostileAgent.
const (
	// hostileHeapBudget is how far the relay's heap (Go's heap_alloc,
	// garbage not yet collected included) may grow above its level
	// before the flood, at any moment of it. It follows from the limits:
	// at most 16 tunnels of the connection, each holding at most some
	// 4 MiB (its control stream's yamux window of 1 MiB, a report frame
	// of at most 1 MiB being read, and the decoded reports of Hello and
	// Health), and the garbage collector's default headroom of as much
	// again.
	hostileHeapBudget = 128 << 20
	// hostileEventWithin is how soon a well-behaved connection's
	// disconnected event must reach the event stream and the webhook
	// after its agent was told to stop.
	hostileEventWithin = 5 * time.Second
	// hostileFlood is how long the hostile agent floods.
	hostileFlood = 8 * time.Second
)

// A hostile agent holding a valid token — a test program speaking the
// real protocol with forged frames — tries to exhaust the relay: dozens
// of tunnels under made-up agent ids, each announcing the largest rule
// set it may, Health frames as fast as it can with a new allowlist status
// and new rules each time, oversized and unknown control frames, result
// frames with made-up reason codes and 60 KB messages, and status reads
// judging its rule sets. Meanwhile a real agent of another workspace
// stops. The relay's heap stays within hostileHeapBudget, the
// well-behaved connection's disconnected event reaches /v1/events and a
// webhook within hostileEventWithin, and /metrics gains no series named
// by the agent.
func TestFaultHostileAgent(t *testing.T) {
	hooks := newHookReceiver(t)
	r := startRelay(t, t.TempDir(), testkit.FreeAddr(t), testkit.FreeAddr(t), "--config", hooks.relayConfig(t))
	ctx := context.Background()
	good, err := r.admin.CreateConnection(ctx, "good", "acme")
	require.NoError(t, err)
	evil, err := r.admin.CreateConnection(ctx, "evil", "mallory")
	require.NoError(t, err)
	s := &system{relay: r, connID: good.ID, token: good.AgentToken, echo: testkit.EchoServer(t), sink: newSinkServer(t)}
	goodAgent := s.startAgent(t, agentOptions{})
	stream := followEvents(t, r)

	time.Sleep(time.Second) // the relay settles after the agent's start
	heapBefore, seriesBefore := r.heap(t), r.refusalSeries(t)
	samples := sampleUsage(t, r.Process, goodAgent.Process)
	floodCtx, stopFlood := context.WithTimeout(ctx, hostileFlood)
	defer stopFlood()
	h := newHostile(r, evil)
	h.start(floodCtx, t)
	watched := r.watchPeaks(floodCtx)

	time.Sleep(hostileFlood / 3) // the flood is on
	stoppedAt := time.Now()
	require.NoError(t, goodAgent.Stop(10*time.Second))
	isGoodDown := func(e api.Event) bool {
		return e.ConnectionID == good.ID && e.Type == api.EventTunnel && e.To == "disconnected"
	}
	downEvent, onStream := stream.wait(t, isGoodDown, hostileEventWithin)
	_, onHook := hooks.wait(t, isGoodDown, hostileEventWithin)

	<-floodCtx.Done()
	h.stop()
	peak := <-watched
	samples.stop()
	relayPeak, _ := samples.peaks()
	time.Sleep(time.Second)
	heapAfter, seriesAfter := r.heap(t), r.refusalSeries(t)

	t.Logf("hostile agent: %s", h.stats())
	t.Logf("relay heap_alloc: before %.1f MiB, peak during the flood %.1f MiB, after %.1f MiB (budget: +%d MiB); peak RSS %s",
		mib(heapBefore), mib(peak.heap), mib(heapAfter), hostileHeapBudget>>20, relayPeak)
	t.Logf("tunnels on the relay at most: %.0f (the good agent's 2 and the cap of 16)", peak.tunnels)
	t.Logf("good connection's disconnected event, after its agent was told to stop: published %s, on /v1/events %s, on the webhook %s",
		downEvent.Time.Sub(stoppedAt).Round(time.Millisecond), onStream.Sub(stoppedAt).Round(time.Millisecond), onHook.Sub(stoppedAt).Round(time.Millisecond))
	t.Logf("refusal series: before %v, after %v", seriesBefore, seriesAfter)
	t.Logf("the hostile connection's events on /v1/events: %s", stream.countOf(evil.ID))

	assert.Less(t, peak.heap-heapBefore, float64(hostileHeapBudget), "relay heap under the flood")
	assert.LessOrEqual(t, peak.tunnels, float64(2+relay.DefaultMaxTunnelsPerConnection), "the hostile connection holds at most the cap")
	assert.Less(t, relayPeak.RSSKiB, int64(rssBound), "relay RSS")
	h.requireTried(t)
	for _, label := range seriesAfter {
		assert.True(t, label == "OTHER" || protocol.Reason(label).Known(), "series %q is not from the reason table", label)
	}
	assert.LessOrEqual(t, len(seriesAfter), len(seriesBefore)+5, "a handful of table reasons and OTHER, not one per made-up reason")
	require.True(t, r.healthy())
	st := r.status(t, good.ID)
	assert.Equal(t, "disconnected", st.TunnelStatus)
}

func mib(b float64) float64 { return b / (1 << 20) }

// hostile is the attacker: slots that each keep a tunnel up and flood it,
// a product asking its tunnels for streams, and status reads.
type hostile struct {
	relay *relayProc
	conn  api.Connection
	wg    sync.WaitGroup

	tunnelsUp, refused, goAways, healthSent, bigSent, connects, statusReads atomic.Int64
	goAwayReasons                                                           sync.Map
}

// hostileSlots is how many tunnels the attacker tries to hold at once:
// more than the relay's default cap of 16.
const hostileSlots = 40

func newHostile(r *relayProc, c api.Connection) *hostile { return &hostile{relay: r, conn: c} }

func (h *hostile) start(ctx context.Context, t *testing.T) {
	reports := newHostileReports(t)
	for slot := range hostileSlots {
		h.wg.Go(func() { h.tunnelSlot(ctx, t, slot, reports) })
	}
	for range 4 {
		h.wg.Go(func() { h.product(ctx) })
	}
	h.wg.Go(func() { h.readStatus(ctx) })
}

func (h *hostile) stop() { h.wg.Wait() }

func (h *hostile) stats() string {
	var reasons []string
	h.goAwayReasons.Range(func(k, v any) bool {
		reasons = append(reasons, fmt.Sprintf("%s×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return fmt.Sprintf("%d tunnels opened (by %d slots), %d refused, %d Health sent, %d oversized or unknown frames, %d GoAways (%s), %d CONNECTs answered with made-up reasons, %d status reads",
		h.tunnelsUp.Load(), hostileSlots, h.refused.Load(), h.healthSent.Load(), h.bigSent.Load(), h.goAways.Load(),
		strings.Join(reasons, ", "), h.connects.Load(), h.statusReads.Load())
}

// requireTried checks that the attack happened: the relay took tunnels,
// refused more, ended floods with GoAways and answered the streams.
func (h *hostile) requireTried(t *testing.T) {
	t.Helper()
	assert.Positive(t, h.tunnelsUp.Load())
	assert.Positive(t, h.refused.Load(), "tunnels over the cap were refused")
	assert.Positive(t, h.goAways.Load(), "floods were ended")
	assert.Positive(t, h.healthSent.Load())
	assert.Positive(t, h.connects.Load())
}

// hostileReports are the attacker's frames, encoded once: Health at the
// bounds (the most rules, each set different, the status changing every
// time), a Health over the relay's body limit, and a 3 MiB frame of an
// unknown type. hellos are the matching Hellos.
type hostileReports struct {
	health    []json.RawMessage // at the bounds
	small     []json.RawMessage // two rules, the status flipping
	hellos    []protocol.Allowlist
	oversized json.RawMessage
	unknown   json.RawMessage
}

func newHostileReports(t *testing.T) hostileReports {
	statuses := []string{"configured", "empty", "invalid"}
	var out hostileReports
	for i := range 6 {
		al := protocol.Allowlist{Status: statuses[i%3], Mode: "enforce", Count: 1024,
			SHA256: strings.Repeat(strconv.Itoa(i%10), 64), LastError: strings.Repeat("e", 20_000)}
		for r := range 1024 {
			al.Allow = append(al.Allow, protocol.RuleSpec{
				Host:  fmt.Sprintf("%s-%d-%d.evil.example", strings.Repeat("x", 200), i, r),
				Ports: []string{"443", "8000-8100", "9000", "9443"},
			})
		}
		out.hellos = append(out.hellos, al)
		out.health = append(out.health, mustJSON(t, protocol.Health{Version: "6.6.6", TunnelsUp: 40, Allowlist: al,
			Errors: map[protocol.Reason]int{protocol.ConnectRefused: 1}}))
		out.small = append(out.small, mustJSON(t, protocol.Health{Version: "6.6.6", Allowlist: protocol.Allowlist{
			Status: statuses[i%3], Mode: "report", Allow: al.Allow[:2]}}))
		if i == 0 {
			al.LastError = strings.Repeat("o", 2<<20)
			out.oversized = mustJSON(t, protocol.Health{Allowlist: al})
		}
	}
	out.unknown = mustJSON(t, map[string]string{"junk": strings.Repeat("u", 3<<20)})
	return out
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// tunnelSlot keeps one hostile tunnel up: dial with the largest Hello it
// may, flood, and dial again when the relay ends it, until ctx ends.
func (h *hostile) tunnelSlot(ctx context.Context, t *testing.T, slot int, reports hostileReports) {
	hello := protocol.Hello{ProtocolVersion: 1, AgentID: fmt.Sprintf("evil-%d", slot), Hostname: strings.Repeat("h", 255),
		Version: "6.6.6", Tunnels: 64, Allowlist: reports.hellos[slot%len(reports.hellos)]}
	for ctx.Err() == nil {
		a, err := tunneltest.DialAgent(t, "ws://"+h.relay.apiAddr, tunneltest.AgentOptions{
			Token: h.conn.AgentToken, Hello: hello, Answer: forgedResult,
		})
		if err != nil {
			h.refused.Add(1)
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		h.tunnelsUp.Add(1)
		h.flood(ctx, a, slot, reports)
		h.countGoAways(a)
		a.Close()
	}
}

// flood sends Health as fast as the tunnel takes it — small ones whose
// status flips, one at the bounds every tenth, a large unknown frame
// every twentieth, and on some slots one over the body limit — until the
// relay ends the tunnel or ctx ends. The first large frame comes after
// the pacer's burst, so a flood is seen for what it is however slowly a
// busy machine moves the large frames.
func (h *hostile) flood(ctx context.Context, a *tunneltest.Agent, slot int, reports hostileReports) {
	for i := 0; ctx.Err() == nil; i++ {
		var err error
		switch {
		case i%20 == 19:
			err = a.Session.Send(protocol.FrameType(99), reports.unknown, 10*time.Second)
			h.bigSent.Add(1)
		case slot%8 == 0 && i == 15: // some slots break the body limit, the others flood on
			err = a.Session.Send(protocol.FrameHealth, reports.oversized, 10*time.Second)
			h.bigSent.Add(1)
		case i%10 == 5:
			err = a.Session.Send(protocol.FrameHealth, reports.health[i%len(reports.health)], 10*time.Second)
			h.healthSent.Add(1)
		default:
			err = a.Session.Send(protocol.FrameHealth, reports.small[i%len(reports.small)], 10*time.Second)
			h.healthSent.Add(1)
		}
		if err != nil || a.Session.IsClosed() {
			return
		}
	}
}

func (h *hostile) countGoAways(a *tunneltest.Agent) {
	for {
		select {
		case f, ok := <-a.Control():
			if !ok {
				return
			}
			var g protocol.GoAway
			if f.Type == protocol.FrameGoAway && f.Decode(protocol.FrameGoAway, &g) == nil {
				h.goAways.Add(1)
				n, _ := h.goAwayReasons.LoadOrStore(g.Reason, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		case <-time.After(2 * time.Second):
			return
		}
	}
}

// forgedResult answers evil-N.corp.example with the made-up reason
// EVIL_N and a message near the data frame cap.
func forgedResult(req protocol.Request, st net.Conn) {
	n := strings.TrimSuffix(strings.TrimPrefix(req.Host, "evil-"), ".corp.example")
	_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{
		Reason: protocol.Reason("EVIL_" + n), Message: strings.Repeat("m", 60_000), RetryAfterSeconds: 1 << 30,
	})
}

// product asks the hostile connection for streams to 50 hosts in turn,
// each answered with its own made-up reason.
func (h *hostile) product(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		c, err := net.DialTimeout("tcp", h.relay.proxyAddr, 2*time.Second)
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, _, err := testkit.Connect(c, h.conn.ID, h.relay.adminKey(), fmt.Sprintf("evil-%d.corp.example:443", i%50))
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			if strings.HasPrefix(resp.Header.Get("Postern-Reason"), "EVIL_") {
				h.connects.Add(1)
			}
		}
		_ = c.Close()
	}
}

// readStatus has the relay judge base URLs by the hostile rule sets.
func (h *hostile) readStatus(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := h.relay.admin.Status(rctx, h.conn.ID, fmt.Sprintf("https://host-%d.evil.example", i)); err == nil {
			h.statusReads.Add(1)
		}
		cancel()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// adminKey is the key the relay wrote on its first start.
func (r *relayProc) adminKey() string {
	key, _ := os.ReadFile(filepath.Join(r.dataDir, "admin.key"))
	return strings.TrimSpace(string(key))
}

// metrics reads /metrics.
func (r *relayProc) metrics(t *testing.T) string {
	t.Helper()
	resp, err := quickClient.Get("http://" + r.apiAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// heap is the relay's go_memstats_heap_alloc_bytes.
func (r *relayProc) heap(t *testing.T) float64 {
	t.Helper()
	v, ok := metricValue(r.metrics(t), "go_memstats_heap_alloc_bytes")
	require.True(t, ok, "no heap figure in /metrics")
	return v
}

func metricValue(text, name string) (float64, bool) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// peaks are the highest readings of the relay's /metrics during a fault.
type peaks struct{ heap, tunnels float64 }

// watchPeaks samples the relay's heap and tunnels until ctx ends and
// sends their peaks.
func (r *relayProc) watchPeaks(ctx context.Context) <-chan peaks {
	out := make(chan peaks, 1)
	go func() {
		var p peaks
		for ctx.Err() == nil {
			resp, err := quickClient.Get("http://" + r.apiAddr + "/metrics")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				heap, _ := metricValue(string(b), "go_memstats_heap_alloc_bytes")
				tunnels, _ := metricValue(string(b), "postern_relay_tunnels")
				p = peaks{heap: max(p.heap, heap), tunnels: max(p.tunnels, tunnels)}
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
		out <- p
	}()
	return out
}

// refusalSeries lists the reason labels of postern_relay_refusals_total.
func (r *relayProc) refusalSeries(t *testing.T) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(r.metrics(t)) {
		if rest, ok := strings.CutPrefix(line, `postern_relay_refusals_total{reason="`); ok {
			label, _, _ := strings.Cut(rest, `"`)
			out = append(out, label)
		}
	}
	return out
}

// eventLog is what a follower of events received, with arrival times.
type eventLog struct {
	mu     sync.Mutex
	events []api.Event
	at     []time.Time
}

func (l *eventLog) add(e api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
}

// wait returns the first event match accepts and when it arrived,
// failing the test if none does within d.
func (l *eventLog) wait(t *testing.T, match func(api.Event) bool, d time.Duration) (api.Event, time.Time) {
	t.Helper()
	var (
		ev api.Event
		at time.Time
	)
	testkit.WaitFor(t, d, "the event", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, e := range l.events {
			if match(e) {
				ev, at = e, l.at[i]
				return true
			}
		}
		return false
	})
	return ev, at
}

// countOf counts a connection's events by type.
func (l *eventLog) countOf(connID string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[string]int{}
	for _, e := range l.events {
		if e.ConnectionID == connID {
			n[e.Type]++
		}
	}
	return fmt.Sprint(n)
}

// followEvents follows /v1/events with the admin key until the test ends.
func followEvents(t *testing.T, r *relayProc) *eventLog {
	l := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.admin.Events(ctx, "", func(e api.Event) error { l.add(e); return nil })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// hookReceiver is a webhook receiver that checks signatures and records
// every event.
type hookReceiver struct {
	eventLog
	srv    *httptest.Server
	secret []byte
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{secret: []byte("hostile-test-webhook-secret-0123456789")}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil || webhook.Verify(h.secret, body, req.Header.Get(webhook.HeaderSignature), time.Now(), time.Minute) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var e api.Event
		if json.Unmarshal(body, &e) == nil {
			h.add(e)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// relayConfig writes a relay config with this receiver as a webhook of
// every workspace, and returns its path.
func (h *hookReceiver) relayConfig(t *testing.T) string {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "webhook.secret")
	require.NoError(t, os.WriteFile(secretFile, h.secret, 0o600))
	cfg := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, "webhooks:\n  - url: %s\n    secret_file: %s\n", h.srv.URL, secretFile), 0o600))
	return cfg
}
