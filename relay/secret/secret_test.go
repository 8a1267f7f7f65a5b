package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

func TestNewRoundTrip(t *testing.T) {
	for name, prefix := range map[string]string{
		"agent token": AgentTokenPrefix,
		"api key":     APIKeyPrefix,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := New(prefix)
			require.NoError(t, err)
			assert.Len(t, s.ID, IDLen)
			assert.True(t, ValidID(s.ID))
			assert.True(t, strings.HasPrefix(s.Display, prefix+"_"+s.ID+"_"), s.ID)
			assert.Len(t, s.Display, len(prefix)+2+IDLen+43)

			id, raw, err := Parse(prefix, s.Display)
			require.NoError(t, err)
			assert.Equal(t, s.ID, id)
			assert.Len(t, raw, SecretSize)
			assert.True(t, Verify(s.Hash, raw))
		})
	}
}

func TestNewIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := New(AgentTokenPrefix)
		require.NoError(t, err)
		require.False(t, seen[s.ID], "id repeated")
		require.False(t, seen[s.Display], "token repeated")
		seen[s.ID], seen[s.Display] = true, true
	}
}

func TestNewBadPrefix(t *testing.T) {
	for name, prefix := range map[string]string{
		"empty":      "",
		"upper":      "PAT",
		"underscore": "p_t",
		"digit":      "p4t",
		"too long":   strings.Repeat("a", 17),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(prefix)
			require.ErrorIs(t, err, ErrBadPrefix)
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := New(AgentTokenPrefix)
	require.NoError(t, err)
	tok := good.Display
	secretPart := tok[len("pat_")+IDLen+1:]

	for name, in := range map[string]string{
		"empty":              "",
		"other prefix":       "pak" + tok[3:],
		"prefix only":        "pat_",
		"missing separator":  "pat" + tok[3+1:] + "x",
		"upper-case id":      "pat_" + strings.ToUpper(good.ID) + "_" + secretPart,
		"id with 0 and 1":    "pat_0000000000000001_" + secretPart,
		"short secret":       tok[:len(tok)-1],
		"long secret":        tok + "A",
		"padded secret":      tok[:len(tok)-1] + "=",
		"std base64 alpha":   "pat_" + good.ID + "_" + strings.Repeat("+", 43),
		"non-canonical tail": "pat_" + good.ID + "_" + strings.Repeat("A", 42) + "B",
		"id separator moved": "pat_" + good.ID[:15] + "_" + good.ID[15:] + secretPart[1:],
		"trailing newline":   tok[:len(tok)-1] + "\n",
		"leading space":      " " + tok[1:],
		"huge":               strings.Repeat("a", MaxLen+1),
		"bearer included":    "Bearer " + tok,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Parse(AgentTokenPrefix, in)
			require.ErrorIs(t, err, ErrMalformed)
			if len(in) > 8 {
				assert.NotContains(t, err.Error(), in[4:], "error must not echo the credential")
			}
		})
	}
}

// ParseID finds the id of a credential whose secret part was truncated or
// mistyped, and nothing else.
func TestParseID(t *testing.T) {
	good, err := New(AgentTokenPrefix)
	require.NoError(t, err)
	tok := good.Display
	for name, tc := range map[string]struct {
		in string
		ok bool
	}{
		"whole token":            {tok, true},
		"short secret":           {tok[:len(tok)-1], true},
		"non-canonical tail":     {"pat_" + good.ID + "_" + strings.Repeat("A", 42) + "B", true},
		"secret cut to nothing":  {"pat_" + good.ID + "_", true},
		"separator gone too":     {"pat_" + good.ID, true},
		"secret typed wrongly":   {"pat_" + good.ID + "_not base64 at all!", true},
		"other prefix":           {"pak" + tok[3:], false},
		"id cut short":           {tok[:len("pat_")+IDLen-1], false},
		"no separator after id":  {"pat_" + good.ID + "x" + tok[len("pat_")+IDLen+1:], false},
		"upper-case id":          {"pat_" + strings.ToUpper(good.ID) + "_x", false},
		"leading space":          {" " + tok, false},
		"empty":                  {"", false},
		"over the length limit":  {"pat_" + good.ID + "_" + strings.Repeat("A", MaxLen), false},
		"bearer scheme included": {"Bearer " + tok, false},
	} {
		t.Run(name, func(t *testing.T) {
			id, ok := ParseID(AgentTokenPrefix, tc.in)
			assert.Equal(t, tc.ok, ok)
			if tc.ok {
				assert.Equal(t, good.ID, id)
			} else {
				assert.Empty(t, id)
			}
		})
	}
}

func TestParseSecretContainingUnderscore(t *testing.T) {
	// base64url uses '_' and '-', so a secret may start with or contain
	// them; Parse must cut at fixed offsets, not on '_'.
	in := "pat_abcdefghijklmnop_" + "__" + strings.Repeat("-", 40) + "A"
	id, raw, err := Parse(AgentTokenPrefix, in)
	require.NoError(t, err)
	assert.Equal(t, "abcdefghijklmnop", id)
	assert.Len(t, raw, SecretSize)
}

func TestVerify(t *testing.T) {
	s, err := New(APIKeyPrefix)
	require.NoError(t, err)
	_, raw, err := Parse(APIKeyPrefix, s.Display)
	require.NoError(t, err)

	flipped := bytes.Clone(raw)
	flipped[SecretSize-1] ^= 1

	for name, tc := range map[string]struct {
		hash, secret []byte
		want         bool
	}{
		"match":          {s.Hash, raw, true},
		"one bit off":    {s.Hash, flipped, false},
		"empty secret":   {s.Hash, nil, false},
		"empty hash":     {nil, raw, false},
		"truncated hash": {s.Hash[:16], raw, false},
		"secret as hash": {raw, raw, false},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, Verify(tc.hash, tc.secret))
		})
	}
}

func TestSecretRedacted(t *testing.T) {
	s, err := New(AgentTokenPrefix)
	require.NoError(t, err)
	secretPart := s.Display[len("pat_")+IDLen+1:]

	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("minted", "token", s)
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", s),
		"%+v":  fmt.Sprintf("%+v", s),
		"%#v":  fmt.Sprintf("%#v", s),
		"%s":   fmt.Sprintf("%s", s),
		"%d":   fmt.Sprintf("%d", s),
		"%x":   fmt.Sprintf("%x", s),
		"ptr":  fmt.Sprintf("%v", &s),
		"slog": logBuf.String(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			assert.NotContains(t, out, secretPart)
			assert.Contains(t, out, s.ID)
		})
	}
	// Sanity check that the slog output was JSON we understand.
	var rec map[string]any
	require.NoError(t, json.Unmarshal(logBuf.Bytes(), &rec))
	assert.Equal(t, "REDACTED", rec["token"].(map[string]any)["secret"])
}

func FuzzParse(f *testing.F) {
	for range 3 {
		s, err := New(AgentTokenPrefix)
		require.NoError(f, err)
		f.Add(AgentTokenPrefix, s.Display)
	}
	f.Add(APIKeyPrefix, "pak_abcdefghijklmnop_"+strings.Repeat("_", 42)+"A")
	f.Add(AgentTokenPrefix, "pat_abcdefghijklmnop_"+strings.Repeat("A", 42)+"B")
	f.Add(AgentTokenPrefix, "")
	f.Add("", "_abcdefghijklmnop_")
	f.Fuzz(func(t *testing.T, prefix, in string) {
		id, raw, err := Parse(prefix, in)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			require.Empty(t, id)
			require.Nil(t, raw)
			return
		}
		// What parses has an id ParseID finds too.
		pid, ok := ParseID(prefix, in)
		require.True(t, ok)
		require.Equal(t, id, pid)
		// Whatever parses is canonical: it re-encodes to the same bytes.
		require.True(t, ValidID(id))
		require.Len(t, raw, SecretSize)
		require.Equal(t, in, prefix+"_"+id+"_"+secretEncoding.EncodeToString(raw))
	})
}

func FuzzParseID(f *testing.F) {
	s, err := New(AgentTokenPrefix)
	require.NoError(f, err)
	for _, in := range []string{s.Display, s.Display[:30], "pat_" + s.ID, "pat_" + s.ID + "x", "", "pat__"} {
		f.Add(AgentTokenPrefix, in)
	}
	f.Fuzz(func(t *testing.T, prefix, in string) {
		id, ok := ParseID(prefix, in)
		if !ok {
			require.Empty(t, id)
			return
		}
		require.True(t, ValidID(id))
		require.True(t, strings.HasPrefix(in, prefix+"_"+id), "the id is the one after the prefix")
		rest := in[len(prefix)+1+IDLen:]
		require.True(t, rest == "" || rest[0] == '_')
		require.LessOrEqual(t, len(in), MaxLen)
	})
}

// TestAgentTokensHaveTheContractShape: what the relay issues is what the
// agent's local check accepts, and what that check refuses the relay
// cannot parse either, so the agent never refuses a token the relay would
// take.
func TestAgentTokensHaveTheContractShape(t *testing.T) {
	assert.Equal(t, protocol.AgentTokenIDLen, IDLen)
	for range 50 {
		s, err := New(AgentTokenPrefix)
		require.NoError(t, err)
		require.NoError(t, protocol.CheckAgentToken(s.Display))
		assert.Len(t, s.Display, protocol.AgentTokenLen)
		for _, bad := range []string{s.Display[:40], s.Display + "x", strings.Replace(s.Display, "_", "-", 1),
			s.Display[:10] + "#" + s.Display[11:], s.Display[:63] + "!"} {
			require.Error(t, protocol.CheckAgentToken(bad))
			_, _, err := Parse(AgentTokenPrefix, bad)
			require.Error(t, err, "the relay refuses what the agent's check refuses")
		}
	}
	k, err := New(APIKeyPrefix)
	require.NoError(t, err)
	assert.ErrorContains(t, protocol.CheckAgentToken(k.Display), "it is an API key")
}
