package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A token of the issued shape; its parts are made up, not a real credential.
const shapedToken = "pat_abcdefghijk23456_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"

func TestCheckAgentTokenSaysWhatIsWrong(t *testing.T) {
	require.Len(t, shapedToken, AgentTokenLen)
	require.NoError(t, CheckAgentToken(shapedToken))
	again := "copy it again in full from the output of `postern-relay connections create` or `rotate-token`"
	tests := map[string]struct {
		tok  string
		want string
	}{
		"cut short": {shapedToken[:40],
			"not a well-formed agent token: it is 40 characters long where an agent token has 64, so it looks cut short; " + again},
		"two pasted together": {shapedToken + shapedToken,
			"not a well-formed agent token: it is 128 characters long where an agent token has 64, so it holds more than the token; " + again},
		"an API key": {"pak_abcdefghijk23456_" + shapedToken[21:],
			"not a well-formed agent token: it is an API key (it starts pak_), not an agent token (which starts pat_); an agent token is printed by `postern-relay connections create`"},
		"something else": {"ghp_" + shapedToken[4:],
			"not a well-formed agent token: it does not start with pat_; " + again},
		"upper-case id": {"pat_ABCDEFGHIJK23456_" + shapedToken[21:],
			"not a well-formed agent token: character 5 is not one an agent token's id uses (a-z, 2-7), so it looks damaged; " + again},
		"id one short": {"pat_abcdefghijk2345__" + shapedToken[21:],
			"not a well-formed agent token: character 20 is not one an agent token's id uses (a-z, 2-7), so it looks damaged; " + again},
		"separator lost": {"pat_abcdefghijk23456x" + shapedToken[21:],
			"not a well-formed agent token: character 21 should be _, so it looks damaged; " + again},
		"damaged secret": {shapedToken[:30] + "+" + shapedToken[31:],
			"not a well-formed agent token: its secret (the part after the second _) is not base64url as issued, so it looks damaged; " + again},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := CheckAgentToken(tt.tok)
			require.ErrorIs(t, err, ErrTokenShape)
			assert.Equal(t, tt.want, err.Error())
			for _, part := range []string{tt.tok[4:20], tt.tok[len(tt.tok)-20:]} {
				assert.False(t, strings.Contains(err.Error(), part), "the message holds no part of the token")
			}
		})
	}
}
