// Package secret mints and checks the relay's bearer credentials: agent
// tokens (pat_…) and API keys (pak_…).
//
// A credential has the shape <prefix>_<id>_<secret>. The id is public: it
// names the stored record (and, for an agent token, the connection) even
// when the secret part is wrong, so the relay can tell "unknown token" from
// "known token, wrong secret". The secret part is 256 random bits; the relay
// keeps only its hash and compares hashes in constant time.
//
// The package owns the format and the cryptography only. It does not store
// anything and does not know which records exist.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/postern/postern/protocol"
)

// The prefixes of the two kinds of credential. The agent token's shape is
// part of the wire contract (protocol.CheckAgentToken checks it where the
// token is installed).
const (
	AgentTokenPrefix = protocol.AgentTokenPrefix
	APIKeyPrefix     = "pak"
)

const (
	// IDLen is the length of the id part: 10 random bytes in base32.
	IDLen = 16
	// SecretSize is the number of random bytes in the secret part.
	SecretSize = 32
	// MaxLen bounds the input Parse looks at, so an attacker cannot make
	// the relay work on megabytes of header.
	MaxLen = 256

	idBytes      = 10
	maxPrefixLen = 16
)

var (
	// ErrMalformed means the string is not a credential of the expected
	// kind. Callers answer it exactly like a wrong secret.
	ErrMalformed = errors.New("malformed credential")
	// ErrBadPrefix means New was given an unusable prefix.
	ErrBadPrefix = errors.New("bad credential prefix")
)

var (
	idEncoding     = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	secretEncoding = base64.RawURLEncoding.Strict()
	secretTextLen  = secretEncoding.EncodedLen(SecretSize)
)

// Secret is a freshly minted credential. Display is the only copy of the
// secret: show it to the user once and drop it. Printing or logging a Secret
// shows the id only.
type Secret struct {
	// ID is the public part, used as the record's primary key.
	ID string
	// Display is the full credential, <prefix>_<id>_<secret>.
	Display string
	// Hash is what the store keeps; see Hash.
	Hash []byte
}

// New mints a credential with the given prefix (for example
// AgentTokenPrefix).
func New(prefix string) (Secret, error) {
	if !validPrefix(prefix) {
		return Secret{}, fmt.Errorf("%w %q: want 1-%d lowercase letters", ErrBadPrefix, prefix, maxPrefixLen)
	}
	id, err := NewID()
	if err != nil {
		return Secret{}, err
	}
	raw := make([]byte, SecretSize)
	if _, err := rand.Read(raw); err != nil {
		return Secret{}, fmt.Errorf("read random secret: %w", err)
	}
	return Secret{
		ID:      id,
		Display: prefix + "_" + id + "_" + secretEncoding.EncodeToString(raw),
		Hash:    Hash(raw),
	}, nil
}

// NewID returns a random 16-character lowercase base32 identifier (80
// bits), the same shape as a credential's id part. It suits any record id
// that appears in URLs and logs.
func NewID() (string, error) {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random id: %w", err)
	}
	return idEncoding.EncodeToString(b), nil
}

// Parse splits a credential of the given prefix into its id and raw secret.
// Anything that is not exactly <prefix>_<16 base32 chars>_<43 base64url
// chars> is ErrMalformed. The error never repeats the input.
func Parse(prefix, s string) (id string, secret []byte, err error) {
	if len(s) > MaxLen {
		return "", nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	}
	if !validPrefix(prefix) {
		return "", nil, fmt.Errorf("%w: bad prefix", ErrMalformed)
	}
	// The secret's alphabet contains '_', so the parts are cut at fixed
	// offsets rather than split on the separator.
	want := len(prefix) + 1 + IDLen + 1 + secretTextLen
	if len(s) != want {
		return "", nil, fmt.Errorf("%w: wrong length", ErrMalformed)
	}
	if s[:len(prefix)] != prefix || s[len(prefix)] != '_' {
		return "", nil, fmt.Errorf("%w: wrong prefix", ErrMalformed)
	}
	rest := s[len(prefix)+1:]
	id, rest = rest[:IDLen], rest[IDLen:]
	if !validID(id) {
		return "", nil, fmt.Errorf("%w: bad id", ErrMalformed)
	}
	if rest[0] != '_' {
		return "", nil, fmt.Errorf("%w: missing separator", ErrMalformed)
	}
	// Strict decoding rejects non-zero trailing bits, so every secret has
	// exactly one accepted spelling.
	secret, err = secretEncoding.DecodeString(rest[1:])
	if err != nil || len(secret) != SecretSize {
		return "", nil, fmt.Errorf("%w: bad secret encoding", ErrMalformed)
	}
	return id, secret, nil
}

// ParseID reads the id of a credential of the given prefix whose secret
// part may be anything, even missing: <prefix>_<id>, optionally followed
// by _ and whatever is left of a truncated or mistyped secret. It lets the
// relay attribute such a credential to its record; it never accepts one.
func ParseID(prefix, s string) (id string, ok bool) {
	if len(s) > MaxLen || !validPrefix(prefix) {
		return "", false
	}
	rest, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(rest) < IDLen {
		return "", false
	}
	id, rest = rest[:IDLen], rest[IDLen:]
	if !validID(id) || (rest != "" && rest[0] != '_') {
		return "", false
	}
	return id, true
}

// ValidID reports whether id has the shape NewID produces. It lets callers
// reject a garbage id before touching the store.
func ValidID(id string) bool { return validID(id) }

// Hash returns the value stored for a secret.
//
// A single SHA-256 is the right tool here, not a password hash such as
// bcrypt or argon2: those exist to slow down guessing of low-entropy human
// passwords. Our secrets are 256 bits from crypto/rand, so a stolen hash
// cannot be brute-forced at any speed, and a slow hash would only hand
// attackers a cheap way to burn the relay's CPU on every request.
func Hash(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

// Verify reports whether secret matches the stored hash. The comparison
// takes the same time wherever the first difference is.
func Verify(hash, secret []byte) bool {
	return subtle.ConstantTimeCompare(hash, Hash(secret)) == 1
}

// String shows the id only.
func (s Secret) String() string { return "secret(" + s.ID + ", redacted)" }

// GoString keeps %#v from printing the credential.
func (s Secret) GoString() string { return s.String() }

// Format makes every fmt verb, not just %v and %s, print the redacted form.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, s.String()) }

// LogValue keeps slog from printing the credential.
func (s Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", s.ID), slog.String("secret", "REDACTED"))
}

func validPrefix(p string) bool {
	if p == "" || len(p) > maxPrefixLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 'a' || p[i] > 'z' {
			return false
		}
	}
	return true
}

func validID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}
