package config

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// testToken has the shape of an agent token; its parts are made up.
const testToken = "pat_abcdefghijk23456_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"

// loadWithToken writes a config naming token_file "agent.token" (relative) and
// a token file with the given content and mode, and loads the config.
func loadWithToken(t *testing.T, content string, mode os.FileMode) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "agent.token")
	require.NoError(t, os.WriteFile(tokenPath, []byte(content), 0o600))
	require.NoError(t, os.Chmod(tokenPath, mode))
	cfgPath := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgPath, yml("relay_url: wss://relay.postern.example", "token_file: agent.token"), 0o644))
	c, err := Load(cfgPath, noEnv)
	require.NoError(t, err)
	require.Equal(t, tokenPath, c.TokenFile)
	return c, tokenPath
}

func TestLoadTokenFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not enforced on Windows")
	}
	tests := map[string]struct {
		content string
		mode    os.FileMode
		wantErr []string // substrings; empty means success
		is      error
	}{
		"0600 with trailing newline": {content: testToken + "\n", mode: 0o600},
		"0400":                       {content: "  " + testToken + "\r\n", mode: 0o400},
		"0644 refused": {
			content: testToken, mode: 0o644,
			wantErr: []string{"has mode 0644, so other users can read the agent token; run: chmod 600 "},
			is:      ErrTokenPermissions,
		},
		"0640 refused": {
			content: testToken, mode: 0o640,
			wantErr: []string{"has mode 0640", "chmod 600"},
			is:      ErrTokenPermissions,
		},
		"0604 refused": {content: testToken, mode: 0o604, wantErr: []string{"chmod 600"}, is: ErrTokenPermissions},
		"empty": {
			content: " \n\n", mode: 0o600,
			wantErr: []string{"is empty"},
			is:      ErrNoToken,
		},
		"two lines": {
			content: testToken + "\n" + testToken + "\n", mode: 0o600,
			wantErr: []string{"holds more than one line"},
		},
		"cut short": {
			content: testToken[:50] + "\n", mode: 0o600,
			wantErr: []string{": not a well-formed agent token: it is 50 characters long where an agent token has 64, so it looks cut short"},
			is:      protocol.ErrTokenShape,
		},
		"an API key": {
			content: "pak_" + testToken[4:], mode: 0o600,
			wantErr: []string{": not a well-formed agent token: it is an API key (it starts pak_)"},
			is:      protocol.ErrTokenShape,
		},
		"too large": {
			content: string(make([]byte, maxTokenSize+1)), mode: 0o600,
			wantErr: []string{"larger than 4096 bytes"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c, path := loadWithToken(t, tt.content, tt.mode)
			tok, err := c.LoadToken(noEnv)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				assert.Equal(t, testToken, tok)
				return
			}
			require.Error(t, err)
			assert.Empty(t, tok)
			assert.Contains(t, err.Error(), path, "the message names the file")
			for _, s := range tt.wantErr {
				assert.Contains(t, err.Error(), s)
			}
			assert.NotContains(t, err.Error(), testToken, "the token never appears in an error")
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
		})
	}
}

func TestLoadTokenChmodCommand(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits are not enforced on Windows")
	}
	dir := filepath.Join(t.TempDir(), "my configs")
	require.NoError(t, os.Mkdir(dir, 0o700))
	path := filepath.Join(dir, "agent.token")
	require.NoError(t, os.WriteFile(path, []byte(testToken), 0o600))
	require.NoError(t, os.Chmod(path, 0o644))
	c := &Config{TokenFile: path}
	_, err := c.LoadToken(nil)
	require.ErrorIs(t, err, ErrTokenPermissions)
	assert.Contains(t, err.Error(), "run: chmod 600 '"+path+"'", "a path with a space is quoted for the shell")
}

func TestLoadTokenSources(t *testing.T) {
	t.Run("environment wins over the file", func(t *testing.T) {
		c, _ := loadWithToken(t, "from-file", 0o644) // a bad file is not even read
		tok, err := c.LoadToken(envOf(map[string]string{EnvAgentToken: " " + testToken + "\n"}))
		require.NoError(t, err)
		assert.Equal(t, testToken, tok)
	})
	t.Run("environment set but empty", func(t *testing.T) {
		c, _ := loadWithToken(t, testToken, 0o600)
		_, err := c.LoadToken(envOf(map[string]string{EnvAgentToken: "  "}))
		assert.ErrorIs(t, err, ErrNoToken)
		assert.ErrorContains(t, err, "POSTERN_AGENT_TOKEN is set but empty")
	})
	t.Run("environment with a space", func(t *testing.T) {
		c := &Config{}
		_, err := c.LoadToken(envOf(map[string]string{EnvAgentToken: "abc def"}))
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "abc")
	})
	t.Run("environment of the wrong shape", func(t *testing.T) {
		c := &Config{}
		_, err := c.LoadToken(envOf(map[string]string{EnvAgentToken: testToken + "garbage"}))
		require.ErrorIs(t, err, protocol.ErrTokenShape)
		assert.EqualError(t, err, "POSTERN_AGENT_TOKEN: not a well-formed agent token: it is 71 characters long where an agent token has 64, "+
			"so it holds more than the token; copy it again in full from the output of `postern-relay connections create` or `rotate-token`")
	})
	t.Run("neither", func(t *testing.T) {
		c := &Config{Path: "/etc/postern/agent.yaml"}
		_, err := c.LoadToken(noEnv)
		assert.ErrorIs(t, err, ErrNoToken)
		assert.EqualError(t, err, "no agent token: set token_file in /etc/postern/agent.yaml or the environment variable POSTERN_AGENT_TOKEN")
	})
	t.Run("missing file", func(t *testing.T) {
		c := &Config{TokenFile: filepath.Join(t.TempDir(), "absent")}
		_, err := c.LoadToken(noEnv)
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("directory", func(t *testing.T) {
		c := &Config{TokenFile: t.TempDir()}
		_, err := c.LoadToken(noEnv)
		assert.ErrorContains(t, err, "is not a regular file")
	})
	t.Run("config string never holds the token", func(t *testing.T) {
		c, _ := loadWithToken(t, testToken, 0o600)
		tok, err := c.LoadToken(noEnv)
		require.NoError(t, err)
		require.Equal(t, testToken, tok)
		assert.NotContains(t, c.String(), testToken)
	})
}
