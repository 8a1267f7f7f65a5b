package testkit

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// SecretOf is the secret part of a credential shaped
// <prefix>_<id>_<secret>: what must never be shown, where the id may be.
// The secret itself may contain "_", so the split is from the left. A
// value of another shape is returned whole.
func SecretOf(cred string) string {
	parts := strings.SplitN(cred, "_", 3)
	if len(parts) != 3 {
		return cred
	}
	return parts[2]
}

// WrongSecret keeps a <prefix>_<id>_<secret> token's prefix and id and
// changes the first character of its secret, as a mistyped or stale token
// does: the relay knows the connection and can say auth is failing.
func WrongSecret(tb testing.TB, token string) string {
	tb.Helper()
	parts := strings.SplitN(token, "_", 3)
	require.Len(tb, parts, 3)
	secret := []byte(parts[2])
	require.NotEmpty(tb, secret)
	if secret[0] == 'A' {
		secret[0] = 'B'
	} else {
		secret[0] = 'A'
	}
	return parts[0] + "_" + parts[1] + "_" + string(secret)
}
