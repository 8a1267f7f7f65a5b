package status

import (
	"testing"

	"github.com/postern/postern/protocol"
)

func FuzzParseBaseURL(f *testing.F) {
	for _, s := range []string{
		"https://gitlab.corp.example",
		"http://10.20.1.5:8050/api?x=1",
		"https://[::1]:443/",
		"https://GitLab.Corp.Example:443",
		"ftp://x",
		"https://",
		"https://h:0",
		"https://h:65536",
		"https://h:-1",
		"https://user:pass@h:8443",
		"//h:443",
		"https://h:%34%34%33",
		"https://[fe80::1%25eth0]:443",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		target, aerr := ParseBaseURL(raw)
		if aerr != nil {
			if aerr.Reason != protocol.BadTarget {
				t.Fatalf("ParseBaseURL(%q) refused with %s, want BAD_TARGET", raw, aerr.Reason)
			}
			return
		}
		if len(raw) > protocol.MaxBaseURLLen {
			t.Fatalf("parseBaseURL accepted %d bytes", len(raw))
		}
		if target.Host == "" || target.Port < 1 || target.Port > 65535 {
			t.Fatalf("ParseBaseURL(%q) = %+v", raw, target)
		}
	})
}
