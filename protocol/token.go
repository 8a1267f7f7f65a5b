package protocol

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// The agent token's shape (spec.md, section 2): pat_<id>_<secret>, cut at
// fixed offsets.
const (
	AgentTokenPrefix = "pat"
	AgentTokenIDLen  = 16
	// AgentTokenSecretLen is the unpadded base64url length of 32 bytes.
	AgentTokenSecretLen = 43
	AgentTokenLen       = len(AgentTokenPrefix) + 1 + AgentTokenIDLen + 1 + AgentTokenSecretLen

	// apiKeyPrefix starts the relay's API keys, the credential most often
	// pasted where an agent token belongs.
	apiKeyPrefix = "pak_"
)

// ErrTokenShape is matched by every error of CheckAgentToken.
var ErrTokenShape = errors.New("not a well-formed agent token")

// TokenShapeError is what CheckAgentToken returns: what is wrong with the
// token, which a caller that wraps it (with the file it came from) can
// still find with errors.As.
type TokenShapeError struct{ problem string }

func (e *TokenShapeError) Error() string     { return ErrTokenShape.Error() + ": " + e.problem }
func (e *TokenShapeError) Is(err error) bool { return err == ErrTokenShape }

func shapeError(format string, a ...any) error {
	return &TokenShapeError{problem: fmt.Sprintf(format, a...)}
}

// CheckAgentToken reports whether tok has the shape of an agent token, so
// that a truncated, padded or wrongly pasted token is named where it was
// installed, before any relay is asked. The error says what is wrong in
// words a person can act on and never contains any part of tok. A token of
// the right shape may still be unknown or revoked; only the relay knows.
func CheckAgentToken(tok string) error {
	const again = "copy it again in full from the output of `postern-relay connections create` or `rotate-token`"
	switch {
	case strings.HasPrefix(tok, apiKeyPrefix):
		return shapeError("it is an API key (it starts %s), not an agent token (which starts %s_); "+
			"an agent token is printed by `postern-relay connections create`", apiKeyPrefix, AgentTokenPrefix)
	case !strings.HasPrefix(tok, AgentTokenPrefix+"_"):
		return shapeError("it does not start with %s_; %s", AgentTokenPrefix, again)
	case len(tok) < AgentTokenLen:
		return shapeError("it is %d characters long where an agent token has %d, so it looks cut short; %s",
			len(tok), AgentTokenLen, again)
	case len(tok) > AgentTokenLen:
		return shapeError("it is %d characters long where an agent token has %d, so it holds more than the token; %s",
			len(tok), AgentTokenLen, again)
	}
	id, rest := tok[len(AgentTokenPrefix)+1:][:AgentTokenIDLen], tok[len(AgentTokenPrefix)+1+AgentTokenIDLen:]
	if i := strings.IndexFunc(id, func(r rune) bool { return (r < 'a' || r > 'z') && (r < '2' || r > '7') }); i >= 0 {
		return shapeError("character %d is not one an agent token's id uses (a-z, 2-7), so it looks damaged; %s",
			len(AgentTokenPrefix)+2+i, again)
	}
	if rest[0] != '_' {
		return shapeError("character %d should be _, so it looks damaged; %s",
			len(AgentTokenPrefix)+2+AgentTokenIDLen, again)
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(rest[1:]); err != nil {
		return shapeError("its secret (the part after the second _) is not base64url as issued, so it looks damaged; %s",
			again)
	}
	return nil
}
