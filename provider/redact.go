package provider

import (
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
)

// minSecretPart is the shortest part of a credential that is scrubbed on
// its own: shorter parts (a user name's "a") would mangle text and reveal
// nothing.
const minSecretPart = 6

// redactor replaces every form of a credential that could come back in a
// provider's text: the whole, its parts around ':' (user and token of
// Basic auth, key and token of Trello), their base64 and URL-escaped forms.
type redactor struct{ secrets []string }

func newRedactor(cred string) redactor {
	forms := map[string]bool{}
	add := func(s string) {
		if len(s) >= minSecretPart {
			forms[s] = true
			forms[url.QueryEscape(s)] = true
			forms[base64.StdEncoding.EncodeToString([]byte(s))] = true
			forms[base64.RawURLEncoding.EncodeToString([]byte(s))] = true
		}
	}
	add(cred)
	add(":" + cred)
	for part := range strings.SplitSeq(cred, ":") {
		add(part)
	}
	out := make([]string, 0, len(forms))
	for s := range forms {
		out = append(out, s)
	}
	// Longest first, so a part never breaks up a longer form.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return redactor{secrets: out}
}

// scrub replaces every form of the credential in s.
func (r redactor) scrub(s string) string {
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}
