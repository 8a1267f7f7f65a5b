package auth

import (
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/internal/fakeclock"
	"github.com/postern/postern/relay/secret"
)

func TestSourceKey(t *testing.T) {
	tests := map[string]struct{ remote, want string }{
		"ipv4":                {"192.0.2.7:51000", "192.0.2.7"},
		"ipv4 other port":     {"192.0.2.7:1", "192.0.2.7"},
		"ipv4-mapped ipv6":    {"[::ffff:192.0.2.7]:443", "192.0.2.7"},
		"ipv6 counts per /64": {"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		"same /64":            {"[2001:db8:1:2:ffff::9]:80", "2001:db8:1:2::/64"},
		"ipv6 with zone":      {"[fe80::1%eth0]:443", "fe80::/64"},
		"loopback":            {"127.0.0.1:9", "127.0.0.1"},
		"not an address":      {"pipe", "pipe"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, sourceKey(tc.remote))
		})
	}
}

func TestParseCredentials(t *testing.T) {
	key, err := secret.New(secret.APIKeyPrefix)
	require.NoError(t, err)
	tok, err := secret.New(secret.AgentTokenPrefix)
	require.NoError(t, err)
	b64 := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }

	t.Run("bearer", func(t *testing.T) {
		tests := map[string]struct {
			prefix, raw, want string
		}{
			"agent token":        {secret.AgentTokenPrefix, tok.Display, "pat:" + tok.ID},
			"surrounding spaces": {secret.AgentTokenPrefix, " " + tok.Display + " ", "pat:" + tok.ID},
			"api key":            {secret.APIKeyPrefix, key.Display, "pak:" + key.ID},
			"wrong kind":         {secret.AgentTokenPrefix, key.Display, ""},
			"id cut short":       {secret.APIKeyPrefix, key.Display[:19], ""},
			"empty":              {secret.APIKeyPrefix, "", ""},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				c := parseCredential(tc.prefix, tc.raw)
				assert.Equal(t, tc.want, c.key)
				if tc.want != "" {
					assert.Len(t, c.sec, secret.SecretSize)
				}
			})
		}
	})
	// A well-formed id with a cut or mistyped secret is still charged to
	// that id, with no secret to compare.
	t.Run("malformed secret", func(t *testing.T) {
		for name, raw := range map[string]string{
			"secret cut":        tok.Display[:30],
			"secret gone":       tok.Display[:20],
			"non-canonical":     tok.Display[:len(tok.Display)-1] + "B",
			"secret mistyped":   tok.Display[:21] + "!!!",
			"one character off": tok.Display + "A",
		} {
			t.Run(name, func(t *testing.T) {
				c := parseCredential(secret.AgentTokenPrefix, raw)
				assert.Equal(t, "pat:"+tok.ID, c.key)
				if name != "non-canonical" {
					assert.Nil(t, c.sec)
				}
			})
		}
	})
	t.Run("proxy", func(t *testing.T) {
		tests := map[string]struct{ header, want string }{
			"basic":             {b64("conn_1:" + key.Display), "pak:" + key.ID},
			"empty connection":  {b64(":" + key.Display), "pak:" + key.ID},
			"no colon":          {b64(key.Display), ""},
			"bearer scheme":     {"Bearer " + key.Display, ""},
			"not base64":        {"Basic !!!", ""},
			"agent token":       {b64("conn_1:" + tok.Display), ""},
			"empty":             {"", ""},
			"colon in password": {b64("conn_1:" + key.Display + ":x"), "pak:" + key.ID}, // a malformed secret, its id well formed
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				assert.Equal(t, tc.want, proxyCredential(tc.header).key)
			})
		}
	})
}

func FuzzProxyCredential(f *testing.F) {
	key, err := secret.New(secret.APIKeyPrefix)
	require.NoError(f, err)
	for _, s := range []string{
		"", "Basic ", "Basic !!!", "Bearer x",
		"Basic " + base64.StdEncoding.EncodeToString([]byte("conn:"+key.Display)),
		"Basic " + base64.StdEncoding.EncodeToString([]byte(":")),
		"Basic " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 300))),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		c := proxyCredential(header)
		if c.key == "" {
			if c.sec != nil {
				t.Fatalf("no id but a secret for %q", header)
			}
			return
		}
		id, ok := strings.CutPrefix(c.key, secret.APIKeyPrefix+":")
		if !ok || !secret.ValidID(id) || (c.sec != nil && len(c.sec) != secret.SecretSize) {
			t.Fatalf("proxyCredential(%q) = %q with %d secret bytes", header, c.key, len(c.sec))
		}
	})
}

func FuzzSourceKey(f *testing.F) {
	for _, s := range []string{"192.0.2.7:1", "[::1]:2", "[fe80::1%eth0]:3", "[::ffff:1.2.3.4]:4", "x", "", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		k := sourceKey(remote)
		if remote != "" && k == "" {
			t.Fatalf("sourceKey(%q) is empty", remote)
		}
		if strings.Contains(k, "%") && !strings.Contains(remote, "%") {
			t.Fatalf("sourceKey(%q) = %q invents a zone", remote, k)
		}
	})
}

// guardOf is the guard of cfg on a fake clock.
func guardOf(cfg Config) (*guard, *fakeclock.Clock) {
	clk := fakeclock.New()
	return newGuard(cfg, secret.Verify, slog.New(slog.DiscardHandler), clk.Now), clk
}

// guardFixture is a guard on a fake clock with small limits.
func guardFixture(_ *testing.T, perSource, perCred int) (*guard, *fakeclock.Clock) {
	return guardOf(Config{FailuresPerSource: perSource, FailuresPerCredential: perCred, Window: time.Minute})
}

func mustCredential(t *testing.T, prefix string) (credential, string) {
	t.Helper()
	s, err := secret.New(prefix)
	require.NoError(t, err)
	return parseCredential(prefix, s.Display), s.Display
}

func TestAuthGuardSourceLimit(t *testing.T) {
	g, clk := guardFixture(t, 3, 100)
	cred, _ := mustCredential(t, secret.AgentTokenPrefix)
	const attacker, neighbour = "198.51.100.1:1000", "198.51.100.2:1000"

	for range 3 {
		require.Nil(t, g.admit(attacker, cred))
		g.failed(attacker, cred, nil)
	}
	e := g.admit(attacker+"1", credential{})
	require.NotNil(t, e, "the fourth attempt from the same address, any port, any credential")
	assert.Equal(t, protocol.RateLimited, e.Reason)
	assert.Equal(t, 20, e.RetryAfter, "one attempt per 60s/3")
	assert.Contains(t, e.Message, "from this address")
	assert.Nil(t, g.admit(neighbour, cred), "another address is not held back")

	// Successes from the address never refund its failures.
	good, _ := mustCredential(t, secret.APIKeyPrefix)
	g.succeeded(good)
	clk.Advance(20 * time.Second)
	require.Nil(t, g.admit(attacker, good))
	g.succeeded(good)
	require.Nil(t, g.admit(attacker, cred))
	g.failed(attacker, cred, nil)
	assert.NotNil(t, g.admit(attacker, cred), "a refill allows one attempt, not more")
}

func TestAuthGuardCredentialLimit(t *testing.T) {
	g, _ := guardFixture(t, 1000, 3)
	target, _ := mustCredential(t, secret.AgentTokenPrefix)
	wrong := credential{key: target.key, sec: make([]byte, secret.SecretSize)}
	attackers := []string{"203.0.113.1:1", "203.0.113.2:1", "203.0.113.3:1"}
	for _, a := range attackers {
		require.Nil(t, g.admit(a, wrong))
		g.failed(a, wrong, nil)
	}
	for _, a := range attackers {
		e := g.admit(a, wrong)
		require.NotNil(t, e, "a failing source is held back once the id is over its limit: %s", a)
		assert.Contains(t, e.Message, "for this credential")
	}
	other, _ := mustCredential(t, secret.AgentTokenPrefix)
	assert.Nil(t, g.admit(attackers[0], other), "other ids are not held back")
	assert.Nil(t, g.admit("192.0.2.10:5", target), "a source that never failed still reaches the store")
}

// guardFixtureLookups is a guard with a budget of store lookups for
// limited sources.
func guardFixtureLookups(_ *testing.T, perSource int, lookups float64) (*guard, *fakeclock.Clock) {
	return guardOf(Config{FailuresPerSource: perSource, FailuresPerCredential: 100, Window: time.Minute, LookupsWhileLimited: lookups})
}

func TestAuthGuardKnownCredentialPassesALimitedSource(t *testing.T) {
	g, clk := guardFixtureLookups(t, 2, 0)
	good, _ := mustCredential(t, secret.APIKeyPrefix)
	stale, _ := mustCredential(t, secret.APIKeyPrefix)
	const shared = "192.0.2.44:1"

	require.Nil(t, g.admit(shared, good))
	g.succeeded(good)
	for range 2 {
		g.failed(shared, stale, nil) // someone behind the same address fails
	}
	require.NotNil(t, g.admit(shared, stale), "the failing credential is held back")
	assert.Nil(t, g.admit(shared, good), "a credential this node verified still passes")
	forged := credential{key: good.key, sec: make([]byte, secret.SecretSize)}
	assert.NotNil(t, g.admit(shared, forged), "its id alone is not enough")
	assert.NotNil(t, g.admit(shared, credential{key: good.key}), "nor its id with a malformed secret")
	g.failed(shared, forged, secret.Hash(good.sec))
	assert.Nil(t, g.admit(shared, good), "a forged secret does not evict the real one")

	g.failed(shared, good, secret.Hash(good.sec)) // the store refused the real secret (revoked)
	assert.NotNil(t, g.admit(shared, good), "a refused real secret is no longer known")

	g.succeeded(good)
	clk.Advance(30 * time.Minute)
	for range 2 {
		g.failed(shared, stale, nil)
	}
	assert.Nil(t, g.admit(shared, good), "a success is remembered well past the window")
	clk.Advance(knownFor)
	for range 2 {
		g.failed(shared, stale, nil)
	}
	assert.NotNil(t, g.admit(shared, good), "for knownFor, not for ever")
}

// A credential the store found with a wrong secret is held too: further
// wrong secrets for its id are refused from memory, its real secret is
// let through to the store.
func TestAuthGuardFoundHashRefusesWrongSecretsFromMemory(t *testing.T) {
	g, _ := guardFixtureLookups(t, 1, 0)
	owner, _ := mustCredential(t, secret.AgentTokenPrefix)
	wrong := credential{key: owner.key, sec: make([]byte, secret.SecretSize)}
	const src = "198.51.100.9:1"
	require.Nil(t, g.admit(src, wrong))
	g.failed(src, wrong, secret.Hash(owner.sec)) // the store had the record
	assert.NotNil(t, g.admit(src, wrong), "the source is limited and the secret differs from the one held")
	assert.Nil(t, g.admit(src, owner), "the real secret matches the hash held")
}

// A limited source's credential this node holds nothing for may reach
// the store only within the relay-wide budget of lookups.
func TestAuthGuardLookupBudget(t *testing.T) {
	g, clk := guardFixtureLookups(t, 1, 2)
	const src, other = "203.0.113.50:1", "203.0.113.51:1"
	junk, _ := mustCredential(t, secret.APIKeyPrefix)
	require.Nil(t, g.admit(src, junk))
	g.failed(src, junk, nil)
	require.Nil(t, g.admit(other, junk))
	g.failed(other, junk, nil)

	fresh := func() credential { c, _ := mustCredential(t, secret.APIKeyPrefix); return c }
	assert.Nil(t, g.admit(src, fresh()), "first lookup of the budget")
	assert.Nil(t, g.admit(other, fresh()), "second: the budget is the node's, not the source's")
	e := g.admit(src, fresh())
	require.NotNil(t, e, "the budget is spent")
	assert.Equal(t, protocol.RateLimited, e.Reason)
	assert.NotNil(t, g.admit(src, credential{}), "an unparsable credential never gets a lookup")
	clk.Advance(500 * time.Millisecond)
	assert.Nil(t, g.admit(src, fresh()), "the budget refills at its rate")
	assert.NotNil(t, g.admit(src, fresh()))

	g0, _ := guardFixtureLookups(t, 1, 0)
	require.Nil(t, g0.admit(src, junk))
	g0.failed(src, junk, nil)
	assert.NotNil(t, g0.admit(src, fresh()), "no budget: only credentials held in memory pass")
}

func TestAuthGuardOff(t *testing.T) {
	g, _ := guardFixture(t, 0, 0)
	cred, _ := mustCredential(t, secret.AgentTokenPrefix)
	for range 1000 {
		require.Nil(t, g.admit("192.0.2.1:1", cred))
		g.failed("192.0.2.1:1", cred, nil)
	}
}
