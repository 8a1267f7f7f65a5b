package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/store"
)

// fakeRemote plays the other nodes: what each answers, and the order the
// router asked them in.
type fakeRemote struct {
	live, draining []string
	liveLater      []string // what Holders answers from its second call on, when set
	holderCalls    int
	holdersErr     error
	answers        map[string]error // nil: the node serves
	asked          []string
}

var (
	errNotHere = errors.New("not here")
	errDown    = errors.New("peer down")
)

func (f *fakeRemote) Holders(context.Context, string) ([]string, []string, error) {
	f.holderCalls++
	if f.holderCalls > 1 && f.liveLater != nil {
		return slices.Clone(f.liveLater), f.draining, f.holdersErr
	}
	return slices.Clone(f.live), f.draining, f.holdersErr
}

func (f *fakeRemote) Forward(_ context.Context, node, _ string, _ protocol.Request, _ time.Duration, lastResort bool) (Stream, protocol.Result, error) {
	f.asked = append(f.asked, node+map[bool]string{true: "(last resort)"}[lastResort])
	if err := f.answers[node]; err != nil {
		return nil, protocol.Result{}, err
	}
	a, b := net.Pipe()
	_ = b.Close()
	return pipeStream{a}, protocol.Result{OK: true}, nil
}

func (f *fakeRemote) Skip(err error) bool {
	return errors.Is(err, errNotHere) || errors.Is(err, errDown)
}
func (f *fakeRemote) Unreachable(err error) bool { return errors.Is(err, errDown) }

type pipeStream struct{ net.Conn }

func (pipeStream) CloseWrite() error { return nil }
func (pipeStream) Abort()            {}

type offline struct{}

func (offline) Offline(context.Context, store.Connection) *protocol.Error {
	return protocol.Errorf(protocol.AgentOffline, "no agent tunnel is up")
}

// newRouter is a router over a node with no tunnel of its own.
func newRouter(t *testing.T, remote Remote) *Router {
	b, err := broker.New(broker.Config{NodeID: "node-c", HeartbeatInterval: time.Second, HandshakeTimeout: time.Second,
		MaxStreamsPerTunnel: 8, Tunnel: tunnel.DefaultConfig()}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return New(b, offline{}, remote)
}

func TestRouterAcrossNodes(t *testing.T) {
	t.Parallel()
	agentRefusal := protocol.Errorf(protocol.TargetBlocked, "deny rule")
	tests := map[string]struct {
		remote    fakeRemote
		wantErr   protocol.Reason
		wantAsked []string
	}{
		"the first live holder serves": {
			remote:    fakeRemote{live: []string{"node-a", "node-b"}},
			wantAsked: []string{"node-a"},
		},
		"a holder that no longer holds is passed": {
			remote:    fakeRemote{live: []string{"node-a", "node-b"}, answers: map[string]error{"node-a": errNotHere}},
			wantAsked: []string{"node-a", "node-b"},
		},
		"the agent's refusal ends the search": {
			remote:    fakeRemote{live: []string{"node-a", "node-b"}, answers: map[string]error{"node-a": agentRefusal}},
			wantErr:   protocol.TargetBlocked,
			wantAsked: []string{"node-a"},
		},
		"draining tunnels are a last resort": {
			remote:    fakeRemote{live: []string{"node-a"}, draining: []string{"node-b"}, answers: map[string]error{"node-a": errNotHere}},
			wantAsked: []string{"node-a", "node-a(last resort)", "node-b(last resort)"},
		},
		"held by a node that cannot be reached": {
			remote:    fakeRemote{live: []string{"node-a"}, answers: map[string]error{"node-a": errDown}},
			wantErr:   protocol.RelayUnavailable,
			wantAsked: []string{"node-a", "node-a(last resort)"},
		},
		"a holder list older than the agent's new tunnel is read again": {
			remote: fakeRemote{live: []string{"node-c"}, liveLater: []string{"node-c", "node-a"},
				answers: map[string]error{"node-c": errDown}},
			wantAsked: []string{"node-c", "node-a"},
		},
		"held nowhere": {
			remote:  fakeRemote{},
			wantErr: protocol.AgentOffline,
		},
		"the store cannot say who holds it": {
			remote:  fakeRemote{holdersErr: errors.New("connection refused")},
			wantErr: protocol.RelayUnavailable,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRouter(t, &tt.remote)
			st, _, e := r.Ask(t.Context(), store.Connection{ID: "conn_1"}, protocol.Request{Op: protocol.OpDial}, time.Second)
			if tt.wantErr != protocol.ReasonUnknown {
				require.NotNil(t, e)
				assert.Equal(t, tt.wantErr, e.Reason, e.Message)
				assert.Nil(t, st)
			} else {
				require.Nil(t, e)
				require.NotNil(t, st)
				_ = st.Close()
			}
			assert.Equal(t, tt.wantAsked, tt.remote.asked)
			if tt.wantErr == protocol.RelayUnavailable {
				assert.Positive(t, e.RetryAfter, "a client is told when to try again")
			}
		})
	}
}

func TestRouterRefusesRevokedAtOnce(t *testing.T) {
	t.Parallel()
	remote := &fakeRemote{live: []string{"node-a"}}
	now := time.Now()
	_, _, e := newRouter(t, remote).Ask(t.Context(), store.Connection{ID: "conn_1", RevokedAt: &now}, protocol.Request{Op: protocol.OpDial}, time.Second)
	require.NotNil(t, e)
	assert.Equal(t, protocol.ConnectionRevoked, e.Reason)
	assert.Empty(t, remote.asked, "no node is asked for a revoked connection")
}
