// Package bundle writes the support bundles of postern-agent diag and
// postern-relay diag: a zip of named files and a manifest, with every
// secret replaced before anything is written. Secrets are replaced twice:
// each value the program knows to be secret (a token, a key, a password)
// wherever it appears, and anything shaped like a Postern credential
// (pat_… agent tokens, pak_… API keys) down to its public id.
//
// It knows nothing of either program: the commands collect the files.
package bundle

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Redacted stands for a replaced secret.
const Redacted = "[REDACTED]"

// credential matches a Postern credential, <prefix>_<16-char id>_<secret>;
// the id stays, as it names the record and is no secret.
var credential = regexp.MustCompile(`\b(pat|pak)_([a-z2-7]{16})_[A-Za-z0-9_-]{20,}`)

// Bundle is a support bundle being collected.
type Bundle struct {
	program, version string
	created          time.Time
	secrets          []string
	files            map[string][]byte
	missing          map[string]string
}

// New starts the bundle of program at version.
func New(program, version string) *Bundle {
	return &Bundle{program: program, version: version, created: time.Now().UTC(),
		files: map[string][]byte{}, missing: map[string]string{}}
}

// Secret names a value that must not appear in any file of the bundle.
// Values shorter than 6 bytes are ignored: they would blot out ordinary
// words, and no secret of Postern's is that short.
func (b *Bundle) Secret(v string) {
	if v = strings.TrimSpace(v); len(v) >= 6 {
		b.secrets = append(b.secrets, v)
	}
}

// Add puts a file in the bundle.
func (b *Bundle) Add(name string, data []byte) { b.files[name] = data }

// AddJSON puts v in the bundle as indented JSON.
func (b *Bundle) AddJSON(name string, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b.Missing(name, err)
		return
	}
	b.Add(name, append(data, '\n'))
}

// Missing records that a file could not be collected, and why; the
// manifest lists it.
func (b *Bundle) Missing(name string, err error) { b.missing[name] = err.Error() }

// Scrub replaces in data every secret the bundle was told of, and every
// Postern credential's secret part.
func (b *Bundle) Scrub(data []byte) []byte {
	// The longest first, so a secret that contains another goes whole.
	secrets := append([]string(nil), b.secrets...)
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		data = bytes.ReplaceAll(data, []byte(s), []byte(Redacted))
	}
	return credential.ReplaceAll(data, []byte("${1}_${2}_"+Redacted))
}

// Manifest is manifest.json: what the bundle holds and what it could not
// collect.
type Manifest struct {
	Program   string            `json:"program"`
	Version   string            `json:"version"`
	CreatedAt time.Time         `json:"created_at"`
	Host      string            `json:"host"`
	Files     []ManifestFile    `json:"files"`
	Missing   map[string]string `json:"missing,omitempty"`
	Redaction string            `json:"redaction"`
}

// ManifestFile is one file of the bundle.
type ManifestFile struct {
	Name   string `json:"name"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Print tells what the bundle at path holds and what it lacks.
func (m Manifest) Print(w io.Writer, path string) error {
	fmt.Fprintf(w, "Support bundle written to %s (secrets replaced by %s):\n", path, Redacted)
	for _, f := range m.Files {
		fmt.Fprintf(w, "  %-16s %8d bytes\n", f.Name, f.Bytes)
	}
	missing := make([]string, 0, len(m.Missing))
	for name := range m.Missing {
		missing = append(missing, name)
	}
	sort.Strings(missing)
	for _, name := range missing {
		fmt.Fprintf(w, "  %-16s missing: %s\n", name, m.Missing[name])
	}
	_, err := fmt.Fprintln(w, "Attach it to your support request.")
	return err
}

// Write scrubs every file and writes the zip to path (mode 0600, replacing
// what was there), manifest.json first. It returns the manifest.
func (b *Bundle) Write(path string) (Manifest, error) {
	host, _ := os.Hostname()
	m := Manifest{Program: b.program, Version: b.version, CreatedAt: b.created, Host: host, Missing: b.missing,
		Redaction: "secrets (tokens, API keys, passwords, webhook and cluster secrets) are replaced by " + Redacted}
	names := make([]string, 0, len(b.files))
	for name := range b.files {
		names = append(names, name)
	}
	sort.Strings(names)
	scrubbed := make(map[string][]byte, len(names))
	for _, name := range names {
		data := b.Scrub(b.files[name])
		scrubbed[name] = data
		sum := sha256.Sum256(data)
		m.Files = append(m.Files, ManifestFile{Name: name, Bytes: len(data), SHA256: hex.EncodeToString(sum[:])})
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range append([]string{"manifest.json"}, names...) {
		data := scrubbed[f]
		if f == "manifest.json" {
			data = b.Scrub(append(manifest, '\n'))
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f, Method: zip.Deflate, Modified: b.created})
		if err != nil {
			return m, err
		}
		if _, err := w.Write(data); err != nil {
			return m, err
		}
	}
	if err := zw.Close(); err != nil {
		return m, err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return m, fmt.Errorf("write bundle: %w", err)
	}
	return m, os.Chmod(path, 0o600) // WriteFile keeps an existing file's mode
}

// tailBytes bounds how much of a file's end TailLines reads.
const tailBytes = 8 << 20

// TailLines returns the last n lines of the file at path (read from at
// most its last 8 MiB).
func TailLines(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	start := max(fi.Size()-tailBytes, 0)
	buf := make([]byte, fi.Size()-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	lines := bytes.SplitAfter(buf, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if start > 0 && len(lines) > 0 {
		lines = lines[1:] // cut in the middle
	}
	return bytes.Join(lines[max(len(lines)-n, 0):], nil), nil
}

// maxFetch bounds one file fetched for a bundle.
const maxFetch = 32 << 20

// Fetch gets a file of the bundle from a running program over HTTP; an
// answer other than 200 is an error that names it.
func Fetch(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(data)))
	}
	return data, nil
}
