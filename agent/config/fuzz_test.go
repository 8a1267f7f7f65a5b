package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input panics, that every rejection is a located
// *Error matching ErrInvalid, and that every accepted config is usable.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("relay_url: [ws://[::1]:1/, wss://x]\nallow: [{ip: 127.0.0.1, ports: [1, '2-3']}]\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("relay_url: wss://r\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, nil)
		if err != nil {
			if c != nil {
				t.Fatal("a Config returned with an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not match ErrInvalid: %v", err)
			}
			for _, e := range Problems(err) {
				var ce *Error
				if !errors.As(e, &ce) {
					t.Fatalf("problem is not an *Error: %v", e)
				}
			}
			return
		}
		if len(c.RelayURLs) == 0 || c.Rules == nil {
			t.Fatalf("accepted config without relay or rules: %s", c)
		}
		for _, u := range c.RelayURLs {
			if u.Scheme != "wss" && !(u.Scheme == "ws" && isLoopbackHost(u.Hostname())) {
				t.Fatalf("accepted relay URL %s", u.Redacted())
			}
		}
		if c.Mode != ModeEnforce && c.Mode != ModeReport {
			t.Fatalf("accepted mode %v", c.Mode)
		}
		if c.Tunnels < 1 || c.Tunnels > MaxTunnels || c.DNSTimeout <= 0 || c.DNSTimeout > MaxDNSTimeout {
			t.Fatalf("accepted out-of-range values: %s", c)
		}
		if checkAgentID(c.AgentID) != nil || checkListenAddr(c.StatusListen) != nil {
			t.Fatalf("accepted bad agent id or status address: %s", c)
		}
	})
}
