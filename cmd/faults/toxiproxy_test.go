package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// link is a toxiproxy proxy on loopback between the agent and the relay,
// run in this process. Toxics added to it act on every connection through
// it, current and future.
type link struct {
	addr  string
	proxy *toxiproxy.Proxy
}

// newLink starts a proxy from a fresh loopback port to upstream; cleanup
// stops it and closes its connections.
func newLink(t *testing.T, upstream string) *link {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	require.NoError(t, srv.Collection.Add(p, true))
	t.Cleanup(func() { _ = srv.Collection.Clear() })
	return &link{addr: p.Listen, proxy: p}
}

// toxic is one toxiproxy toxic: type, direction ("upstream" is agent to
// relay, "downstream" relay to agent) and attributes.
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// both returns the toxic for each direction, named after it.
func both(typ string, attrs map[string]any) []toxic {
	return []toxic{
		{Name: typ + "_up", Type: typ, Stream: "upstream", Toxicity: 1, Attributes: attrs},
		{Name: typ + "_down", Type: typ, Stream: "downstream", Toxicity: 1, Attributes: attrs},
	}
}

func (l *link) add(t *testing.T, toxics ...toxic) {
	t.Helper()
	for _, x := range toxics {
		b, err := json.Marshal(x)
		require.NoError(t, err)
		_, err = l.proxy.Toxics.AddToxicJson(bytes.NewReader(b))
		require.NoError(t, err, "add toxic %s", x.Name)
	}
}

func (l *link) remove(t *testing.T, toxics ...toxic) {
	t.Helper()
	for _, x := range toxics {
		require.NoError(t, l.proxy.Toxics.RemoveToxic(context.Background(), x.Name), "remove toxic %s", x.Name)
	}
}

// cut closes every connection through the link and stops accepting; heal
// listens again on the same address.
func (l *link) cut() { l.proxy.Stop() }

func (l *link) heal(t *testing.T) {
	t.Helper()
	require.NoError(t, l.proxy.Start())
}
