package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/doctor"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// TestScenarios produces every failure state of the status model for real
// on loopback and checks that each place a person looks names the same
// cause within a few seconds of the fault: the CONNECT answer (status,
// Postern-Reason, JSON body), the relay's status and live-check API, and
// the agent side (`postern-agent doctor --json` and `status --json`, run
// as the real binary against the agent's config file, and the agent's
// audit log). testdata/states.md is the table of what each place shows.
//
// Relays and agents run in this process (the agent wired from its config
// file as `postern-agent run` wires it), one pair per group; the groups
// run in parallel.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary and waits out real timeouts")
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	_, agentBin := testkit.Binaries(t)

	for name, group := range map[string]func(t *testing.T, agentBin string){
		"lifecycle": lifecycleScenarios,
		"policy":    policyScenarios,
		"dns":       dnsScenarios,
		"target":    targetScenarios,
		"wrong token past the relay's auth limit": authLimitScenario,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			group(t, agentBin)
		})
	}
}

// site is one relay with a workspace and the product's view of it.
type site struct {
	relay    *testRelay
	relayURL string // what agents put in relay_url
	key      string // the product's workspace API key
	product  *client.Client
}

func newSite(t *testing.T, tune ...func(*relay.Config)) *site {
	t.Helper()
	r := startRelay(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", tune...)
	key, err := r.admin.CreateAPIKey(context.Background(), api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)
	return &site{relay: r, relayURL: "ws://" + r.apiAddr, key: key.Key, product: scenarioClient(t, r.apiAddr, key.Key)}
}

func (s *site) connection(t *testing.T, name string) api.Connection {
	t.Helper()
	c, err := s.relay.admin.CreateConnection(context.Background(), name, "acme")
	require.NoError(t, err)
	return c
}

// connectEventually sends CONNECTs until one answers with status and
// reason, for at most `within`, and returns the last answer.
func (s *site) connectEventually(t *testing.T, connID, target string, status int, reason protocol.Reason) connectResult {
	t.Helper()
	var last connectResult
	eventually(t, func() bool {
		last = dialConnect(t, s.relay.proxyAddr, connID, s.key, target)
		return last.status == status && last.reason == string(reason)
	}, func() string {
		return fmt.Sprintf("CONNECT %s never answered %d %s; last: %d %s %+v", target, status, reason, last.status, last.reason, last.body)
	})
	return last
}

// checkRefusedEventually asks for a live check until the API refuses it
// with reason, for at most `within`.
func (s *site) checkRefusedEventually(t *testing.T, connID, baseURL string, reason protocol.Reason) {
	t.Helper()
	var err error
	eventually(t, func() bool {
		_, err = s.product.Check(context.Background(), connID, baseURL)
		var apiErr *api.Error
		return errors.As(err, &apiErr) && apiErr.Reason == reason
	}, func() string { return fmt.Sprintf("check never refused with %s; last: %v", reason, err) })
	requireCheckRefused(t, err, reason)
}

// lifecycleStep is one state of a connection and its agent, reached by
// fault from the state before it.
type lifecycleStep struct {
	name string
	// fault produces the state and returns the agent's files.
	fault   func(t *testing.T) agentFiles
	connID  string
	connect int
	// reason is the CONNECT answer's and the status API's; the status API
	// shows tunnel and auth, and allowlist "unknown": in none of these
	// states does a connected agent report its rules.
	reason       protocol.Reason
	tunnel, auth string
	// lastError is a substring of the status's last_error.
	lastError string
	// agentSide checks what the admin sees on the agent's machine.
	agentSide func(t *testing.T, files agentFiles)
}

// lifecycleScenarios walks one connection through never started, stopped
// and revoked, and gives a wrong token and an unreachable relay a
// connection each.
func lifecycleScenarios(t *testing.T, agentBin string) {
	// The agents here retry every 500 ms at most, where production's
	// backoff grows to 30 s, and every refused token counts against the
	// loopback source; the relay's limit on refused credentials would soon
	// answer the doctor 429 instead of naming the token. That interplay has
	// its own scenario (authLimitScenario); here the limit is off.
	s := newSite(t, func(c *relay.Config) { c.AuthFailuresPerSource, c.AuthFailuresPerCredential = 0, 0 })
	_, webPort := startProvider(t, false)
	rules := fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%s]\n", webPort)
	baseURL := "http://127.0.0.1:" + webPort
	target := "127.0.0.1:" + webPort

	primary := s.connection(t, "acme-jira")
	primaryFiles := writeAgentFiles(t, s.relayURL, primary.AgentToken, rules)

	wrong := s.connection(t, "acme-gitlab")
	wrongFiles := writeAgentFiles(t, s.relayURL, testkit.WrongSecret(t, wrong.AgentToken), rules)

	unreachable := s.connection(t, "acme-bitbucket")
	deadRelay := closedPort(t)
	unreachableFiles := writeAgentFiles(t, "ws://"+deadRelay, unreachable.AgentToken, rules)

	// connectedThen is a fault that starts the primary connection's agent,
	// waits until it serves, and then breaks something.
	connectedThen := func(breakIt func(t *testing.T, running *fileAgent)) func(*testing.T) agentFiles {
		return func(t *testing.T) agentFiles {
			running := startFileAgent(t, primaryFiles, 0)
			assertStatus(t, s.product, primary.ID, baseURL, statusWant{tunnel: "connected", auth: "active", allowlist: "allowed", ready: true})
			res := s.connectEventually(t, primary.ID, target, http.StatusOK, "")
			roundTripHTTP(t, res, "/", http.StatusOK)
			require.NoError(t, res.conn.Close())
			breakIt(t, running)
			return primaryFiles
		}
	}
	// notRunning: the relay path and the token are fine, so the agent
	// process is what is missing.
	notRunning := func(t *testing.T, files agentFiles) {
		assertAgentNotRunning(t, agentBin, files)
		rep, _ := runDoctor(t, agentBin, files.cfgPath)
		assert.True(t, rep.OK, "every check passes: %+v", rep.Failed())
		assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayAuth, target: s.relay.apiAddr, status: doctor.Pass, detail: "token accepted"})
		assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelaySession, target: s.relay.apiAddr, status: doctor.Pass, detail: "Welcome from relay node"})
	}
	// tokenRefused: the agent runs and reaches the relay, which refuses
	// its token with reason; doctor says what to do, and shows more.
	tokenRefused := func(reason protocol.Reason, remediation string, more ...doctorWant) func(*testing.T, agentFiles) {
		return func(t *testing.T, files agentFiles) {
			assertAgentNotReady(t, agentBin, files)
			rep, _ := runDoctor(t, agentBin, files.cfgPath)
			assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayTCP, target: s.relay.apiAddr, status: doctor.Pass})
			assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayAuth, target: s.relay.apiAddr, status: doctor.Fail,
				reason: reason, remediation: remediation})
			for _, w := range more {
				assertDoctor(t, rep, w)
			}
		}
	}
	// runAgent starts an agent on files; in the steps that use it, it never
	// gets a tunnel up.
	runAgent := func(files agentFiles) func(*testing.T) agentFiles {
		return func(t *testing.T) agentFiles {
			startFileAgent(t, files, 0)
			return files
		}
	}

	steps := []lifecycleStep{{
		name:   "agent never started",
		fault:  func(*testing.T) agentFiles { return primaryFiles },
		connID: primary.ID, connect: http.StatusBadGateway, reason: protocol.AgentNeverConnected,
		tunnel: "never_connected", auth: "active", lastError: "no agent has ever connected",
		agentSide: notRunning,
	}, {
		name:   "agent stopped",
		fault:  connectedThen(func(t *testing.T, running *fileAgent) { running.stop(t) }),
		connID: primary.ID, connect: http.StatusBadGateway, reason: protocol.AgentOffline,
		tunnel: "disconnected", auth: "active", lastError: "last seen",
		agentSide: notRunning,
	}, {
		name: "connection revoked",
		fault: connectedThen(func(t *testing.T, _ *fileAgent) {
			_, err := s.relay.admin.RevokeConnection(context.Background(), primary.ID)
			require.NoError(t, err)
		}),
		connID: primary.ID, connect: http.StatusForbidden, reason: protocol.ConnectionRevoked,
		tunnel: "revoked", auth: "revoked", lastError: "connection revoked at",
		agentSide: tokenRefused(protocol.AgentTokenRevoked, "create a new connection with `postern-relay connections create`"),
	}, {
		name:   "agent with a wrong token",
		fault:  runAgent(wrongFiles),
		connID: wrong.ID, connect: http.StatusBadGateway, reason: protocol.AgentAuthFailed,
		tunnel: "never_connected", auth: "failing", lastError: "an agent presented a wrong secret",
		agentSide: tokenRefused(protocol.AgentTokenInvalid, "token refused: rotate it with `postern-relay connections rotate-token",
			doctorWant{layer: doctor.LayerRelaySession, target: s.relay.apiAddr, status: doctor.Skip}),
	}, {
		name:   "relay unreachable from the agent",
		fault:  runAgent(unreachableFiles),
		connID: unreachable.ID, connect: http.StatusBadGateway, reason: protocol.AgentNeverConnected,
		tunnel: "never_connected", auth: "active", lastError: "no agent has ever connected",
		agentSide: func(t *testing.T, files agentFiles) {
			assertAgentNotReady(t, agentBin, files)
			rep, _ := runDoctor(t, agentBin, files.cfgPath)
			assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayTCP, target: deadRelay, status: doctor.Fail,
				reason:      protocol.ConnectRefused,
				remediation: "check that the relay is up and that outbound TCP " + portOf(t, deadRelay) + " to 127.0.0.1 is allowed by your firewall"})
			for _, layer := range []string{doctor.LayerWebSocket, doctor.LayerRelayAuth, doctor.LayerRelaySession} {
				assertDoctor(t, rep, doctorWant{layer: layer, target: deadRelay, status: doctor.Skip})
			}
		},
	}}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) {
			files := step.fault(t)
			connID := step.connID
			st := assertStatus(t, s.product, connID, "", statusWant{tunnel: step.tunnel, auth: step.auth, allowlist: "unknown", reason: step.reason})
			assert.Contains(t, st.LastError, step.lastError)
			if step.reason == protocol.AgentOffline {
				assert.NotNil(t, st.LastSeenAt, "an agent that was connected has a last_seen_at")
			}
			res := s.connectEventually(t, connID, target, step.connect, step.reason)
			assertRefused(t, res, step.connect, step.reason)
			s.checkRefusedEventually(t, connID, baseURL, step.reason)
			step.agentSide(t, files)
		})
		require.True(t, ok, "later steps start from this state")
	}
}

// authLimitScenario: an agent with a wrong token pauses 15 s after each
// refusal, so with production limits its address stays under the relay's
// limit on refused credentials (10 a minute) and doctor on the same
// machine names the token. When the address is over the limit anyway
// (other refusals from it), doctor says so and still points at the token.
func authLimitScenario(t *testing.T, agentBin string) {
	s := newSite(t) // production auth limits
	_, webPort := startProvider(t, false)
	conn := s.connection(t, "acme-jira")
	// The product's key is verified before the refusals below put the
	// loopback address over its limit; a key verified within the window
	// keeps working from a limited address. (In production the product and
	// the agent do not share an address.)
	assertStatus(t, s.product, conn.ID, "", statusWant{tunnel: "never_connected", auth: "active", allowlist: "unknown", reason: protocol.AgentNeverConnected})
	assertRefused(t, timedConnect(t, s.relay.proxyAddr, conn.ID, s.key, "127.0.0.1:"+webPort), http.StatusBadGateway, protocol.AgentNeverConnected)
	bad := testkit.WrongSecret(t, conn.AgentToken)
	files := writeAgentFiles(t, s.relayURL, bad, fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%s]\n", webPort))
	startFileAgent(t, files, 0)

	rep, _ := runDoctor(t, agentBin, files.cfgPath)
	assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayAuth, target: s.relay.apiAddr, status: doctor.Fail,
		reason: protocol.AgentTokenInvalid, remediation: "rotate-token"})

	// Push the address over the limit with more refused attempts.
	for range 12 {
		req, err := http.NewRequest(http.MethodGet, "http://"+s.relay.apiAddr+protocol.TunnelPath, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+bad)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
	}
	rep, _ = runDoctor(t, agentBin, files.cfgPath)
	assertDoctor(t, rep, doctorWant{layer: doctor.LayerRelayAuth, target: s.relay.apiAddr, status: doctor.Fail,
		reason: protocol.RateLimited, detail: "relay answered 429 RATE_LIMITED",
		remediation: "most likely this agent's token is wrong or revoked"})

	assertStatus(t, s.product, conn.ID, "", statusWant{tunnel: "never_connected", auth: "failing", allowlist: "unknown", reason: protocol.AgentAuthFailed})
	res := s.connectEventually(t, conn.ID, "127.0.0.1:"+webPort, http.StatusBadGateway, protocol.AgentAuthFailed)
	assertRefused(t, res, http.StatusBadGateway, protocol.AgentAuthFailed)
	s.checkRefusedEventually(t, conn.ID, "http://127.0.0.1:"+webPort, protocol.AgentAuthFailed)
	assertAgentNotReady(t, agentBin, files)
}

// pathScenario is one target the product asks for through a connected
// agent, and what every place must show for it.
type pathScenario struct {
	target  string // CONNECT host:port
	baseURL string // for the status and check APIs
	// connect is the CONNECT answer's status; reason is empty for 200.
	connect int
	reason  protocol.Reason
	// through checks what the product sees through an open tunnel; again
	// opens another tunnel to the same target.
	through func(t *testing.T, res connectResult, again func() connectResult)
	// allowlist is the status API's verdict for baseURL; the status API
	// judges only the rules, so reason is set only for policy refusals.
	allowlist    string
	statusReason protocol.Reason
	check        checkWant
	// checkWithin bounds the check; default `within`.
	checkWithin time.Duration
	// doctor is the doctor check that shows this state, if one does.
	doctor *doctorWant
	// explain is the verdict `postern-agent validate --explain` prints for
	// target; empty when not asserted.
	explain string
}

// checkWant is what the live check must answer.
type checkWant struct {
	ready      bool
	reason     protocol.Reason
	retryAfter int
	steps      []string
	detail     string // in the last step's detail
	// details are more substrings of the last step's detail.
	details []string
}

// runPathScenarios runs every scenario against one connected agent. The
// doctor runs once for the group, on first need.
func runPathScenarios(t *testing.T, s *site, connID string, fa *fileAgent, agentBin string, scenarios map[string]pathScenario) {
	var doctorMu sync.Mutex
	var report *doctor.Report
	doctorReport := func(t *testing.T) doctor.Report {
		doctorMu.Lock()
		defer doctorMu.Unlock()
		if report == nil {
			rep, _ := runDoctor(t, agentBin, fa.cfgPath)
			report = &rep
		}
		return *report
	}
	for name, sc := range scenarios {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("connect", func(t *testing.T) {
				res := timedConnect(t, s.relay.proxyAddr, connID, s.key, sc.target)
				if sc.connect == http.StatusOK {
					require.Equal(t, http.StatusOK, res.status, "%s %+v", res.reason, res.body)
					sc.through(t, res, func() connectResult {
						return timedConnect(t, s.relay.proxyAddr, connID, s.key, sc.target)
					})
					return
				}
				assertRefused(t, res, sc.connect, sc.reason)
				e := auditEntry(t, fa.auditPath, func(e audit.Entry) bool { return e.RequestID == res.body.RequestID })
				assert.Equal(t, audit.Denied, e.Decision, "audit decision")
				assert.Equal(t, string(sc.reason), e.Reason, "audit reason")
				assert.Equal(t, sc.target, e.Target, "audit target")
			})
			t.Run("status", func(t *testing.T) {
				assertStatus(t, s.product, connID, sc.baseURL, statusWant{
					tunnel: "connected", auth: "active", allowlist: sc.allowlist, reason: sc.statusReason,
					ready: sc.allowlist == "allowed",
				})
			})
			t.Run("check", func(t *testing.T) {
				budget := sc.checkWithin
				if budget == 0 {
					budget = within
				}
				start := time.Now()
				var reqID string
				ck, err := s.product.Check(withRequestID(context.Background(), &reqID), connID, sc.baseURL)
				require.NoError(t, err, "a check that ran answers 200 whatever its verdict")
				assert.Less(t, time.Since(start), budget, "check took %s", time.Since(start))
				assertCheck(t, ck, sc.check)
				require.NotEmpty(t, reqID)
				e := auditEntry(t, fa.auditPath, func(e audit.Entry) bool { return e.RequestID == reqID })
				assert.Equal(t, string(protocol.OpCheck), e.Op, "audit op")
				host, port := checkHostPort(t, sc.baseURL)
				assert.Equal(t, net.JoinHostPort(host, port), e.Target, "audit target of the check")
				assert.Equal(t, string(sc.check.reason), e.Reason, "audit reason of the check")
			})
			t.Run("agent side", func(t *testing.T) {
				if sc.explain != "" {
					res := runTool(t, agentBin, "validate", "--config", fa.cfgPath, "--explain", sc.target)
					assert.Contains(t, res.stdout, sc.target+": "+sc.explain, "validate --explain")
					wantCode := 0
					if sc.explain != "allowed" {
						wantCode = 3
					}
					assert.Equal(t, wantCode, res.code, "validate --explain exit status: %s", res.stderr)
				}
				if sc.doctor != nil {
					assertDoctor(t, doctorReport(t), *sc.doctor)
				}
			})
		})
	}
}

func assertCheck(t *testing.T, ck api.Check, w checkWant) {
	t.Helper()
	assert.Equal(t, w.ready, ck.Ready, "check ready")
	assert.Equal(t, w.reason, ck.Reason, "check reason")
	assert.Equal(t, w.reason.Info().ProviderErrorCode, ck.ProviderErrorCode, "check provider_error_code")
	assert.Equal(t, w.retryAfter, ck.RetryAfter, "check retry_after")
	names := make([]string, len(ck.Steps))
	for i, st := range ck.Steps {
		names[i] = st.Step
	}
	require.Equal(t, w.steps, names, "check steps: %+v", ck.Steps)
	last := ck.Steps[len(ck.Steps)-1]
	assert.Equal(t, w.reason, last.Reason, "last step's reason")
	assert.Equal(t, w.reason == protocol.ReasonUnknown, last.OK, "last step's ok")
	for _, d := range append([]string{w.detail}, w.details...) {
		assert.Contains(t, last.Detail, d, "last step's detail")
	}
}

// checkHostPort is the host and port a check of baseURL probes.
func checkHostPort(t *testing.T, baseURL string) (string, string) {
	t.Helper()
	scheme, rest, ok := strings.Cut(baseURL, "://")
	require.True(t, ok)
	hostport, _, _ := strings.Cut(rest, "/")
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return splitHostPort(t, hostport)
	}
	if scheme == "https" {
		return hostport, "443"
	}
	return hostport, "80"
}

func splitHostPort(t *testing.T, hostport string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	require.NoError(t, err)
	return h, p
}

// policyScenarios: refusals by the customer's rules, decided before any
// DNS query or connect.
func policyScenarios(t *testing.T, agentBin string) {
	s := newSite(t)
	conn := s.connection(t, "acme-jira")
	_, webPort := startProvider(t, false)
	_, deniedPort := startProvider(t, false) // would answer, if the deny rule let it
	rules := fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%s, %s]\ndeny:\n  - ip: 127.0.0.1\n    ports: [%s]\n", webPort, deniedPort, deniedPort)
	fa := startFileAgent(t, writeAgentFiles(t, s.relayURL, conn.AgentToken, rules), 0)
	assertStatus(t, s.product, conn.ID, "", statusWant{tunnel: "connected", auth: "active", allowlist: "configured", ready: true})

	runPathScenarios(t, s, conn.ID, fa, agentBin, map[string]pathScenario{
		"allowed target (control)": {
			target: "127.0.0.1:" + webPort, baseURL: "http://127.0.0.1:" + webPort + "/",
			connect: http.StatusOK, through: func(t *testing.T, res connectResult, _ func() connectResult) {
				roundTripHTTP(t, res, "/", http.StatusOK)
			},
			allowlist: "allowed",
			check:     checkWant{ready: true, steps: []string{"allowlist", "tcp", "http"}, detail: "HTTP 200 OK: reachable"},
			doctor:    &doctorWant{layer: doctor.LayerTargetTCP, target: "127.0.0.1:" + webPort, status: doctor.Pass},
			explain:   "allowed",
		},
		"target not allowlisted": {
			target: "jira.other.example:443", baseURL: "https://jira.other.example",
			connect: http.StatusForbidden, reason: protocol.AllowlistMissing,
			allowlist: "missing", statusReason: protocol.AllowlistMissing,
			check:   checkWant{reason: protocol.AllowlistMissing, steps: []string{"allowlist"}},
			explain: "missing",
		},
		"deny rule": {
			target: "127.0.0.1:" + deniedPort, baseURL: "http://127.0.0.1:" + deniedPort,
			connect: http.StatusForbidden, reason: protocol.TargetBlocked,
			allowlist: "blocked", statusReason: protocol.TargetBlocked,
			check: checkWant{reason: protocol.TargetBlocked, steps: []string{"allowlist"}, detail: "deny"},
			doctor: &doctorWant{layer: doctor.LayerTargetTCP, target: "127.0.0.1:" + deniedPort, status: doctor.Fail,
				reason: protocol.TargetBlocked, remediation: "another rule overrides this allow rule"},
			explain: "blocked",
		},
		"metadata address": {
			target: "169.254.169.254:80", baseURL: "http://169.254.169.254/latest/meta-data/",
			connect: http.StatusForbidden, reason: protocol.TargetBlocked,
			allowlist: "blocked", statusReason: protocol.TargetBlocked,
			check:   checkWant{reason: protocol.TargetBlocked, steps: []string{"allowlist"}, detail: "169.254.169.254"},
			explain: "blocked",
		},
	})
}

// dnsScenarios: the agent's DNS (a test server, dns.servers) fails in each
// distinct way, or answers with the metadata address.
func dnsScenarios(t *testing.T, agentBin string) {
	s := newSite(t)
	conn := s.connection(t, "acme-jira")
	dnsAddr := startFaultDNS(t)
	_, webPort := startProvider(t, false)
	var rules strings.Builder
	fmt.Fprintf(&rules, "dns:\n  servers: [%q]\n  timeout: 300ms\nallow:\n", dnsAddr)
	for _, name := range []string{dnsNameNXDomain, dnsNameServFail, dnsNameTimeout, dnsNameMetadata} {
		fmt.Fprintf(&rules, "  - host: %s\n    ports: [%s]\n", name, webPort)
	}
	fa := startFileAgent(t, writeAgentFiles(t, s.relayURL, conn.AgentToken, rules.String()), 0)
	assertStatus(t, s.product, conn.ID, "", statusWant{tunnel: "connected", auth: "active", allowlist: "configured", ready: true})

	scenario := func(name string, connect int, reason protocol.Reason, detail, remediation string) pathScenario {
		return pathScenario{
			target: name + ":" + webPort, baseURL: "http://" + name + ":" + webPort,
			connect: connect, reason: reason,
			allowlist: "allowed", // the relay judges rules only; it cannot see the customer's DNS
			check:     checkWant{reason: reason, steps: []string{"allowlist", "dns"}, detail: detail},
			doctor: &doctorWant{layer: doctor.LayerTargetDNS, target: name, status: doctor.Fail,
				reason: reason, remediation: remediation},
			explain: "allowed",
		}
	}
	runPathScenarios(t, s, conn.ID, fa, agentBin, map[string]pathScenario{
		"NXDOMAIN": scenario(dnsNameNXDomain, http.StatusBadGateway, protocol.DNSNXDomain,
			"server "+dnsAddr+", NXDOMAIN", "does not know "+dnsNameNXDomain),
		"SERVFAIL": scenario(dnsNameServFail, http.StatusBadGateway, protocol.DNSServFail,
			"server "+dnsAddr+", SERVFAIL", "the DNS server failed (SERVFAIL) for "+dnsNameServFail+": check "+dnsAddr),
		"DNS timeout": scenario(dnsNameTimeout, http.StatusGatewayTimeout, protocol.DNSTimeout,
			"", "no DNS server answered: check "+dnsAddr),
		"name resolving to the metadata address": scenario(dnsNameMetadata, http.StatusForbidden, protocol.TargetBlocked,
			"169.254.169.254 [blocked]", "add an ip rule naming that exact address"),
	})
}

// targetScenarios: the target itself refuses, stays silent, presents a
// certificate nobody trusts, or answers 401 or 429.
func targetScenarios(t *testing.T, agentBin string) {
	s := newSite(t)
	conn := s.connection(t, "acme-jira")
	tlsSrv, tlsPort := startProvider(t, true)
	_, webPort := startProvider(t, false)
	refused := portOf(t, closedPort(t))
	hole := portOf(t, blackHole(t))
	var rules strings.Builder
	rules.WriteString("allow:\n")
	// One rule per port: doctor probes at most three ports of a rule.
	for _, p := range []string{webPort, tlsPort, refused, hole} {
		fmt.Fprintf(&rules, "  - ip: 127.0.0.1\n    ports: [%s]\n", p)
	}
	// The agent's open timeout bounds resolve and connect of a stream;
	// production's is 15 s, which this suite need not wait out.
	fa := startFileAgent(t, writeAgentFiles(t, s.relayURL, conn.AgentToken, rules.String()), time.Second)
	assertStatus(t, s.product, conn.ID, "", statusWant{tunnel: "connected", auth: "active", allowlist: "configured", ready: true})

	local := func(p string) string { return "127.0.0.1:" + p }
	tcpPass := func(p string) *doctorWant {
		return &doctorWant{layer: doctor.LayerTargetTCP, target: local(p), status: doctor.Pass}
	}
	runPathScenarios(t, s, conn.ID, fa, agentBin, map[string]pathScenario{
		"refused port": {
			target: local(refused), baseURL: "http://" + local(refused),
			connect: http.StatusBadGateway, reason: protocol.ConnectRefused, allowlist: "allowed",
			check: checkWant{reason: protocol.ConnectRefused, steps: []string{"allowlist", "tcp"}, detail: "connection refused"},
			doctor: &doctorWant{layer: doctor.LayerTargetTCP, target: local(refused), status: doctor.Fail,
				reason: protocol.ConnectRefused, remediation: "nothing accepts TCP " + refused + " on 127.0.0.1"},
		},
		"connect timeout": {
			target: local(hole), baseURL: "http://" + local(hole),
			connect: http.StatusGatewayTimeout, reason: protocol.ConnectTimeout, allowlist: "allowed",
			check: checkWant{reason: protocol.ConnectTimeout, steps: []string{"allowlist", "tcp"}, detail: "dial " + local(hole)},
			// The check's connect is bounded only by the whole check's
			// 10 s budget, so it answers after about 10 s.
			checkWithin: 12 * time.Second,
			// The doctor waits out its 5 s step timeout.
			doctor: &doctorWant{layer: doctor.LayerTargetTCP, target: local(hole), status: doctor.Fail,
				reason: protocol.ConnectTimeout, remediation: "a firewall between the agent and 127.0.0.1 drops TCP " + hole},
		},
		"TLS failure (self-signed certificate)": {
			target: local(tlsPort), baseURL: "https://" + local(tlsPort),
			// TLS is end to end: the relay and the agent carry bytes, so the
			// CONNECT succeeds and the product's own handshake fails.
			connect: http.StatusOK, through: func(t *testing.T, res connectResult, again func() connectResult) {
				tlsThrough(t, res, again, tlsSrv.Certificate())
			},
			allowlist: "allowed",
			check: checkWant{reason: protocol.TLSFailed, steps: []string{"allowlist", "tcp", "tls"},
				detail:  "verify error: x509: certificate signed by unknown authority",
				details: []string{"subject ", "issuer ", "not_after "}},
			doctor: tcpPass(tlsPort),
		},
		"provider answers 401": {
			target: local(webPort), baseURL: "http://" + local(webPort) + "/auth",
			connect: http.StatusOK, through: func(t *testing.T, res connectResult, _ func() connectResult) {
				roundTripHTTP(t, res, "/auth", http.StatusUnauthorized)
			},
			allowlist: "allowed",
			check: checkWant{ready: true, steps: []string{"allowlist", "tcp", "http"},
				detail: "HTTP 401 Unauthorized: reachable, authentication required"},
			doctor: tcpPass(webPort),
		},
		"provider answers 429 with Retry-After": {
			target: local(webPort), baseURL: "http://" + local(webPort) + "/limited",
			connect: http.StatusOK, through: func(t *testing.T, res connectResult, _ func() connectResult) {
				resp := roundTripHTTP(t, res, "/limited", http.StatusTooManyRequests)
				assert.Equal(t, "30", resp.Header.Get("Retry-After"))
			},
			allowlist: "allowed",
			check: checkWant{reason: protocol.UpstreamRateLimited, retryAfter: 30, steps: []string{"allowlist", "tcp", "http"},
				detail: "HTTP 429 Too Many Requests: rate limited, Retry-After 30 (30s)"},
			doctor: tcpPass(webPort),
		},
	})
}

// roundTripHTTP sends one GET through an open tunnel and requires the
// provider's status.
func roundTripHTTP(t *testing.T, res connectResult, path string, want int) *http.Response {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status, "%s %+v", res.reason, res.body)
	_ = res.conn.SetDeadline(time.Now().Add(within))
	_, err := fmt.Fprintf(res.conn, "GET %s HTTP/1.1\r\nHost: provider\r\nConnection: close\r\n\r\n", path)
	require.NoError(t, err)
	resp, err := http.ReadResponse(res.br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, want, resp.StatusCode, "the provider's answer reaches the product unchanged")
	return resp
}

// tlsThrough shows that TLS through the tunnel is the product's own: with
// the system roots the handshake fails on the provider's self-signed
// certificate, and trusting exactly that certificate makes it succeed.
func tlsThrough(t *testing.T, res connectResult, again func() connectResult, cert *x509.Certificate) {
	t.Helper()
	handshake := func(res connectResult, roots *x509.CertPool) error {
		require.Equal(t, http.StatusOK, res.status, "%s %+v", res.reason, res.body)
		_ = res.conn.SetDeadline(time.Now().Add(within))
		tc := tls.Client(&testkit.BufferedConn{Conn: res.conn, R: res.br}, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, MinVersion: tls.VersionTLS12})
		return tc.Handshake()
	}
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, handshake(res, nil), &unknown, "the product's own handshake meets the provider's certificate")
	assert.Equal(t, cert.Raw, unknown.Cert.Raw, "the certificate is the provider's, not the relay's or the agent's")

	trusted := x509.NewCertPool()
	trusted.AddCert(cert)
	require.NoError(t, handshake(again(), trusted), "trusting the provider's certificate, TLS through the tunnel works")
}
