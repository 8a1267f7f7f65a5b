package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden vectors in testdata/")

// goldenFrames pins the exact bytes of one frame of every type. A change
// to any of them is a wire-format change and needs a new subprotocol.
func goldenFrames() map[string]struct {
	typ FrameType
	v   any
} {
	at := time.Date(2026, 11, 29, 9, 30, 0, 0, time.UTC)
	summary := Allowlist{
		Status: "configured", Mode: "enforce", Count: 2,
		SHA256:   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		LoadedAt: at,
		Allow:    []RuleSpec{{Host: "gitlab.corp.example", Ports: []string{"443"}}},
		Deny:     []RuleSpec{{CIDR: "10.20.5.0/24"}},
	}
	return map[string]struct {
		typ FrameType
		v   any
	}{
		"hello":   {FrameHello, Hello{ProtocolVersion: 1, AgentID: "agent-1", Hostname: "vm-1", Version: "1.0.0", Tunnels: 2, StartedAt: at, Allowlist: summary}},
		"welcome": {FrameWelcome, Welcome{NodeID: "relay-a", HeartbeatMS: 15000, SessionID: "s1"}},
		"health": {FrameHealth, Health{Time: at, TunnelsUp: 2, ActiveStreams: 3, BytesIn: 10, BytesOut: 20,
			UptimeSeconds: 60, Version: "1.0.0", Allowlist: summary, Errors: map[Reason]int{ConnectRefused: 1}}},
		"goaway":         {FrameGoAway, GoAway{Reason: "shutdown", Message: "relay draining"}},
		"revoked":        {FrameRevoked, Revoked{Message: "connection revoked"}},
		"notice":         {FrameNotice, Notice{Code: NoticeDuplicateAgent, Message: "another agent process uses agent id agent-1"}},
		"request-dial":   {FrameRequest, Request{Op: OpDial, ID: "r1", Host: "gitlab.corp.example", Port: 443, DeadlineUnixMS: at.UnixMilli()}},
		"result-ok":      {FrameResult, Result{OK: true, Addr: "10.0.0.7:443", Rule: "allow host=gitlab.corp.example ports=443"}},
		"result-refused": {FrameResult, Result{Reason: AllowlistMissing, Message: "no allow rule covers gitlab.other:443"}},
	}
}

func TestGoldenVectors(t *testing.T) {
	for name, g := range goldenFrames() {
		t.Run(name, func(t *testing.T) {
			got, err := AppendFrame(nil, g.typ, g.v)
			require.NoError(t, err)
			path := filepath.Join("testdata", name+".hex")
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(hex.EncodeToString(got)+"\n"), 0o644))
			}
			raw, err := os.ReadFile(path)
			require.NoError(t, err, "run go test ./protocol -update to create golden files")
			want, err := hex.DecodeString(strings.TrimSpace(string(raw)))
			require.NoError(t, err)
			assert.Equal(t, want, got, "encoding changed")

			f, err := ReadFrame(bytes.NewReader(want), MaxControlFrame)
			require.NoError(t, err)
			assert.Equal(t, g.typ, f.Type)
		})
	}
}

func TestReadFrameBounds(t *testing.T) {
	tests := map[string]struct {
		in   []byte
		want error
	}{
		"empty input":    {nil, io.EOF},
		"short header":   {[]byte{0, 0}, io.ErrUnexpectedEOF},
		"zero length":    {[]byte{0, 0, 0, 0}, ErrFrameEmpty},
		"over cap":       {[]byte{0, 1, 0, 1, 6}, ErrFrameTooLarge},
		"claims 4 GiB":   {[]byte{0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		"body cut short": {[]byte{0, 0, 0, 5, 6, '{'}, io.ErrUnexpectedEOF},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.in), MaxStreamFrame)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestDecodeIgnoresUnknownFieldsAndChecksType(t *testing.T) {
	body := []byte(`{"op":"dial","id":"x","host":"h","port":1,"future_field":{"a":1}}`)
	var req Request
	require.NoError(t, Frame{Type: FrameRequest, Body: body}.Decode(FrameRequest, &req))
	assert.Equal(t, "h", req.Host)
	err := Frame{Type: FrameResult, Body: body}.Decode(FrameRequest, &req)
	assert.ErrorIs(t, err, ErrFrameType)
}

func TestRequestValidate(t *testing.T) {
	ok := Request{Op: OpDial, ID: "r", Host: "h", Port: 443}
	tests := map[string]struct {
		mut  func(*Request)
		want bool
	}{
		"valid dial":         {func(*Request) {}, true},
		"missing op":         {func(r *Request) { r.Op = "" }, false},
		"port zero":          {func(r *Request) { r.Port = 0 }, false},
		"port 65536":         {func(r *Request) { r.Port = 65536 }, false},
		"no host":            {func(r *Request) { r.Host = "" }, false},
		"host too long":      {func(r *Request) { r.Host = strings.Repeat("a", 256) }, false},
		"id too long":        {func(r *Request) { r.ID = strings.Repeat("a", 129) }, false},
		"unknown op passes":  {func(r *Request) { r.Op = "teleport" }, true}, // answered with UNSUPPORTED_OP
		"check without host": {func(r *Request) { r.Op = OpCheck; r.Host = ""; r.Port = 0; r.BaseURL = "https://x" }, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := ok
			tc.mut(&r)
			err := r.Validate()
			if tc.want {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, ErrBadRequest)
			}
		})
	}
}

func TestReasonTableMatchesDesign(t *testing.T) {
	// The CONNECT answers of the reason table (spec.md, section 8).
	want := map[Reason]struct {
		provider string
		status   int
	}{
		AgentNeverConnected: {ProviderConnectivityBlocked, 502},
		AgentOffline:        {ProviderConnectivityBlocked, 502},
		AgentAuthFailed:     {ProviderConnectivityBlocked, 502},
		ConnectionRevoked:   {ProviderConnectivityBlocked, 403},
		AllowlistMissing:    {ProviderConnectivityBlocked, 403},
		TargetBlocked:       {ProviderBaseURLBlocked, 403},
		BadTarget:           {ProviderBaseURLBlocked, 400},
		DNSNXDomain:         {ProviderBaseURLUnreachable, 502},
		DNSServFail:         {ProviderBaseURLUnreachable, 502},
		DNSTimeout:          {ProviderBaseURLUnreachable, 504},
		ConnectRefused:      {ProviderBaseURLUnreachable, 502},
		ConnectTimeout:      {ProviderBaseURLUnreachable, 504},
		HostUnreachable:     {ProviderBaseURLUnreachable, 502},
		TLSFailed:           {ProviderBaseURLUnreachable, 0},
		UpstreamRateLimited: {ProviderRateLimited, 0},
		AgentBusy:           {ProviderRateLimited, 429},
		RateLimited:         {ProviderRateLimited, 429},
		RelayUnavailable:    {ProviderConnectivityBlocked, 503},
		ProxyAuthRequired:   {"", 407},
	}
	for r, w := range want {
		info := r.Info()
		assert.True(t, r.Known(), r)
		assert.Equal(t, w.provider, info.ProviderErrorCode, r)
		assert.Equal(t, w.status, info.HTTPStatus, r)
	}
	for _, r := range []Reason{AgentBusy, RateLimited, RelayUnavailable, UpstreamRateLimited} {
		assert.True(t, r.Info().RetryAfter, "%s carries Retry-After", r)
	}
	for _, info := range Reasons() {
		if info.ProviderErrorCode != "" {
			assert.NotEqual(t, 401, info.HTTPStatus, "a policy refusal is never a 401: %s", info.Reason)
		}
	}
	assert.False(t, ReasonUnknown.Known())
	assert.Equal(t, 502, Reason("SOMETHING_NEW").Info().HTTPStatus)
}

func TestReadRequestRejectsWrongFrame(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteFrame(&buf, FrameHello, Hello{AgentID: "a"}))
	_, err := ReadRequest(&buf)
	assert.True(t, errors.Is(err, ErrFrameType))
}
