package resolve

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	maxHostsSize = 4 << 20
	// hostsCheckInterval bounds how often Lookup stats the hosts file for changes.
	hostsCheckInterval = 2 * time.Second
)

// hostsTable maps a lower-case name without trailing dot to its addresses in file order.
type hostsTable map[string][]netip.Addr

// parseHosts reads an /etc/hosts file: "address name [aliases...]" with "#" comments.
// Lines with an unparsable address are skipped.
func parseHosts(data []byte) hostsTable {
	t := make(hostsTable)
	for line := range strings.SplitSeq(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		ip, err := netip.ParseAddr(fields[0])
		if err != nil {
			continue
		}
		for _, name := range fields[1:] {
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			if !validName(name) || containsAddr(t[name], ip) {
				continue
			}
			t[name] = append(t[name], ip)
		}
	}
	return t
}

func containsAddr(list []netip.Addr, ip netip.Addr) bool {
	for _, a := range list {
		if a == ip {
			return true
		}
	}
	return false
}

// hostsFile is a hosts table that follows its file: it is read at New and re-read when the
// file's modification time or size changes, checked at most every hostsCheckInterval.
type hostsFile struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	table   hostsTable
	modTime time.Time
	size    int64
	exists  bool
	checked time.Time
}

func newHostsFile(path string, now time.Time, log *slog.Logger) *hostsFile {
	h := &hostsFile{path: path, log: log}
	h.refresh(now, true)
	return h
}

// lookup returns a copy of the addresses for name (lower case, no trailing dot).
func (h *hostsFile) lookup(now time.Time, name string) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.checked) >= hostsCheckInterval || now.Before(h.checked) {
		h.refresh(now, false)
	}
	return append([]netip.Addr(nil), h.table[name]...)
}

// refresh re-reads the file if it changed. The caller holds h.mu (or owns h exclusively).
func (h *hostsFile) refresh(now time.Time, force bool) {
	h.checked = now
	fi, err := os.Stat(h.path)
	if err != nil {
		if h.exists || force {
			if !errors.Is(err, fs.ErrNotExist) {
				h.log.Warn("hosts file unreadable; ignoring it", "path", h.path, "err", err)
			}
			h.table, h.exists, h.modTime, h.size = nil, false, time.Time{}, 0
		}
		return
	}
	if !force && h.exists && fi.ModTime().Equal(h.modTime) && fi.Size() == h.size {
		return
	}
	data, err := readBounded(h.path, maxHostsSize)
	if err != nil {
		h.log.Warn("hosts file unreadable; keeping the previous table", "path", h.path, "err", err)
		return
	}
	if len(data) >= maxHostsSize {
		// Drop the partial last line rather than guess at it.
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i]
		}
		h.log.Warn("hosts file too large; reading only its start", "path", h.path, "limit_bytes", maxHostsSize)
	}
	h.table = parseHosts(data)
	h.exists, h.modTime, h.size = true, fi.ModTime(), fi.Size()
}

// readBounded reads at most limit bytes of the file at path.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
