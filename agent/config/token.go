package config

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/postern/postern/protocol"
)

// maxTokenSize bounds the token file; a token is a few dozen bytes.
const maxTokenSize = 4096

// LoadToken returns the agent token: POSTERN_AGENT_TOKEN from getenv when it
// is set, else the content of TokenFile with surrounding whitespace trimmed.
// A token file that group or others can read is refused, since the token
// lets anyone holding it impersonate this agent, and so is a token of the
// wrong shape (cut short, an API key, pasted garbage): the error, holding a
// *protocol.TokenShapeError, names what is wrong before any relay is asked.
// No error, here or anywhere in this package, contains the token.
func (c *Config) LoadToken(getenv Getenv) (string, error) {
	if getenv != nil {
		if v, ok := getenv(EnvAgentToken); ok {
			tok := strings.TrimSpace(v)
			if tok == "" {
				return "", fmt.Errorf("%w: %s is set but empty", ErrNoToken, EnvAgentToken)
			}
			if !printableToken(tok) {
				return "", fmt.Errorf("%s holds spaces, line breaks or control characters; a token is one printable word", EnvAgentToken)
			}
			if err := protocol.CheckAgentToken(tok); err != nil {
				return "", fmt.Errorf("%s: %w", EnvAgentToken, err)
			}
			return tok, nil
		}
	}
	if c.TokenFile == "" {
		return "", fmt.Errorf("%w: set token_file in %s or the environment variable %s", ErrNoToken, c.Path, EnvAgentToken)
	}
	return readTokenFile(c.TokenFile)
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	// Windows has no mode bits; there the file's ACL protects it.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return "", fmt.Errorf("%w: token file %s has mode %04o, so other users can read the agent token; run: chmod 600 %s",
			ErrTokenPermissions, path, perm, shellQuote(path))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(data) > maxTokenSize {
		return "", fmt.Errorf("token file %s is larger than %d bytes; is this the right file?", path, maxTokenSize)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%w: token file %s is empty", ErrNoToken, path)
	}
	if !printableToken(tok) {
		return "", fmt.Errorf("token file %s holds more than one line, spaces or control characters; a token is one printable word", path)
	}
	if err := protocol.CheckAgentToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}

// printableToken reports whether tok is printable ASCII without spaces, the
// only shape a token can have in an Authorization header.
func printableToken(tok string) bool {
	for i := range len(tok) {
		if tok[i] <= ' ' || tok[i] > '~' {
			return false
		}
	}
	return true
}

// shellQuote quotes path for a command the user will paste, when it needs it.
func shellQuote(path string) string {
	if !strings.ContainsAny(path, " \t\n'\"$`\\;&|<>*?()[]{}!#~") {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
