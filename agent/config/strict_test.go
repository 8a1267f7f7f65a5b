package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type strictHook struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secret_file"`
}

type strictSettings struct {
	Listen   string        `yaml:"listen"`
	Interval time.Duration `yaml:"heartbeat_interval"`
	Limit    int           `yaml:"flap_threshold"`
	Rate     float64       `yaml:"proxy_rate_per_key"`
	Secure   bool          `yaml:"secure_cookies"`
	Trusted  []string      `yaml:"trusted_proxies"`
	Hooks    []strictHook  `yaml:"webhooks"`
}

func TestDecodeStrictReadsEveryKind(t *testing.T) {
	s := strictSettings{Listen: "default", Limit: 5}
	err := DecodeStrict("relay.yaml", yml(
		"heartbeat_interval: 3s",
		"proxy_rate_per_key: 2",
		"secure_cookies: true",
		"trusted_proxies: [10.0.0.0/8]",
		"webhooks:",
		"  - url: https://h.example/in",
		"    secret_file: /etc/hook.secret",
	), &s)
	require.NoError(t, err)
	assert.Equal(t, strictSettings{
		Listen: "default", Limit: 5, Interval: 3 * time.Second, Rate: 2, Secure: true,
		Trusted: []string{"10.0.0.0/8"}, Hooks: []strictHook{{URL: "https://h.example/in", SecretFile: "/etc/hook.secret"}},
	}, s, "keys absent from the file keep their defaults")
}

func TestDecodeStrictNamesEveryProblemWithItsLine(t *testing.T) {
	err := DecodeStrict("relay.yaml", yml(
		"listn: 127.0.0.1:8080",
		"proxy-rate-per-key: 5",
		"heartbeat_interval: 10",
		"flap_threshold: many",
		"secure_cookies: yes",
		"proxy_rate_per_key: .inf",
		"webhooks:",
		"  - url: https://h.example/in",
		"    secret: inline",
		"listen: a",
		"listen: b",
	), &strictSettings{})
	require.ErrorIs(t, err, ErrInvalid)
	assert.Equal(t, []string{
		`relay.yaml:1: unknown key "listn"; did you mean "listen"?`,
		`relay.yaml:2: unknown key "proxy-rate-per-key"; did you mean "proxy_rate_per_key"?`,
		`relay.yaml:3: heartbeat_interval: want a duration such as "2s" or "500ms", got the number 10`,
		`relay.yaml:4: flap_threshold: want an integer, got the string "many"`,
		`relay.yaml:5: secure_cookies: want true or false, got the string "yes"`,
		`relay.yaml:6: proxy_rate_per_key: ".inf" is not a usable number`,
		`relay.yaml:9: unknown key "secret" in webhooks[0]; did you mean "secret_file"?`,
		`relay.yaml:11: duplicate key "listen" (first set at line 10)`,
	}, problemsOf(t, err))
}

func TestDecodeStrictSyntaxAndShape(t *testing.T) {
	err := DecodeStrict("relay.yaml", yml("listen: [a"), &strictSettings{})
	assert.Equal(t, []string{`relay.yaml:1: YAML syntax: did not find expected ',' or ']'`}, problemsOf(t, err))

	err = DecodeStrict("relay.yaml", yml("- listen: a"), &strictSettings{})
	assert.Equal(t, []string{`relay.yaml:1: want a mapping of settings such as "listen: ...", got a list`}, problemsOf(t, err))

	assert.NoError(t, DecodeStrict("relay.yaml", nil, &strictSettings{}), "an empty file sets nothing")
	assert.Panics(t, func() { _ = DecodeStrict("x", nil, strictSettings{}) }, "a non-pointer is a programming error")
}
