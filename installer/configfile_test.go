package installer

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/agent/config"
)

func TestInstalledConfig(t *testing.T) {
	const tok = "/etc/postern/agent.token"
	tests := map[string]struct {
		in, srcDir string
		verbatim   bool
		want       map[string]string // key -> value in the installed copy
	}{
		"relative token next to the config is kept verbatim": {
			in: "relay_url: wss://r.example\ntoken_file: agent.token\n", srcDir: "/home/admin", verbatim: true,
		},
		"absolute installed token is kept verbatim": {
			in: "token_file: /etc/postern/agent.token # ours\n", srcDir: "/home/admin", verbatim: true,
		},
		"missing token_file is added": {
			in: "relay_url: wss://r.example\n", srcDir: "/home/admin",
			want: map[string]string{"token_file": tok, "relay_url": "wss://r.example"},
		},
		"another token file is replaced": {
			in: "token_file: /home/admin/secret.txt\n", srcDir: "/home/admin",
			want: map[string]string{"token_file": tok},
		},
		"relative paths keep their meaning": {
			in: "token_file: agent.token\nca_file: ca.pem\naudit_log: logs/audit.jsonl\n", srcDir: "/opt/cfg",
			want: map[string]string{"ca_file": "/opt/cfg/ca.pem", "audit_log": "/opt/cfg/logs/audit.jsonl", "token_file": "agent.token"},
		},
		"relative paths from the install dir are untouched": {
			in: "token_file: agent.token\nca_file: ca.pem\n", srcDir: "/etc/postern", verbatim: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := installedConfig([]byte(tc.in), tc.srcDir, "/etc/postern", tok)
			require.NoError(t, err)
			if tc.verbatim {
				assert.Equal(t, tc.in, string(out))
				return
			}
			var got map[string]any
			require.NoError(t, yaml.Unmarshal(out, &got))
			for k, v := range tc.want {
				assert.Equal(t, v, got[k], k)
			}
		})
	}
}

func TestInstalledConfigRefusesNonMappings(t *testing.T) {
	for name, in := range map[string]string{"empty": "", "list": "- a\n- b\n", "scalar": "hello\n", "broken": "a: [\n"} {
		t.Run(name, func(t *testing.T) {
			_, err := installedConfig([]byte(in), "/src", "/etc/postern", "/etc/postern/agent.token")
			require.Error(t, err)
		})
	}
}

// FuzzInstalledConfig: whatever the admin's file, the installed copy either
// is refused or names the installed token file, and a valid config stays
// valid.
func FuzzInstalledConfig(f *testing.F) {
	for _, s := range []string{
		"relay_url: wss://r.example\ntoken_file: agent.token\nallow: []\n",
		"relay_url: [wss://a.example, wss://b.example]\nca_file: ca.pem\naudit_log: a.jsonl\n",
		"token_file: &a x\nca_file: *a\n",
		"# only a comment\n",
		"token_file: !!binary aGVsbG8=\n",
		"? [complex]\n: key\n",
	} {
		f.Add([]byte(s))
	}
	const tok = "/etc/postern/agent.token"
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := installedConfig(data, "/home/admin", "/etc/postern", tok)
		if err != nil {
			return
		}
		before, errBefore := config.Parse("/home/admin/agent.yaml", data, nil)
		after, errAfter := config.Parse("/etc/postern/agent.yaml", out, nil)
		if errBefore == nil {
			require.NoError(t, errAfter, "a valid config must stay valid:\n%s", out)
			assert.Equal(t, tok, after.TokenFile)
			assert.Equal(t, before.Rules.SHA256(), after.Rules.SHA256())
			if before.CAFile != "" {
				assert.Equal(t, filepath.Clean(before.CAFile), after.CAFile)
			}
		}
	})
}
