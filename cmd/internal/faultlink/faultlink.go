// Package faultlink puts a toxiproxy proxy, run in the test's own process,
// on a loopback link between two Postern parts (an agent and a relay, a
// relay and PostgreSQL) so that tests can slow, cut and heal it.
package faultlink

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// Link is a proxy from a fresh loopback port to an upstream address.
// Toxics added to it act on every connection through it, current and
// future.
type Link struct {
	// Addr is where clients connect instead of the upstream.
	Addr  string
	proxy *toxiproxy.Proxy
}

// New starts a link to upstream; the test's cleanup stops it and closes
// its connections.
func New(tb testing.TB, upstream string) *Link {
	tb.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, tb.Name(), "127.0.0.1:0", upstream)
	require.NoError(tb, srv.Collection.Add(p, true))
	tb.Cleanup(func() { _ = srv.Collection.Clear() })
	return &Link{Addr: p.Listen, proxy: p}
}

// Toxic is one toxiproxy toxic: type, direction ("upstream" is client to
// upstream, "downstream" the other way) and attributes.
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// Both returns the toxic for each direction, named after it.
func Both(typ string, attrs map[string]any) []Toxic {
	return []Toxic{
		{Name: typ + "_up", Type: typ, Stream: "upstream", Toxicity: 1, Attributes: attrs},
		{Name: typ + "_down", Type: typ, Stream: "downstream", Toxicity: 1, Attributes: attrs},
	}
}

// Add puts toxics on the link.
func (l *Link) Add(tb testing.TB, toxics ...Toxic) {
	tb.Helper()
	for _, x := range toxics {
		b, err := json.Marshal(x)
		require.NoError(tb, err)
		_, err = l.proxy.Toxics.AddToxicJson(bytes.NewReader(b))
		require.NoError(tb, err, "add toxic %s", x.Name)
	}
}

// Remove takes toxics off the link.
func (l *Link) Remove(tb testing.TB, toxics ...Toxic) {
	tb.Helper()
	for _, x := range toxics {
		require.NoError(tb, l.proxy.Toxics.RemoveToxic(context.Background(), x.Name), "remove toxic %s", x.Name)
	}
}

// Cut closes every connection through the link and stops accepting; Heal
// listens again on the same address.
func (l *Link) Cut() { l.proxy.Stop() }

// Heal listens again after Cut.
func (l *Link) Heal(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, l.proxy.Start())
}
