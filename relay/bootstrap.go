package relay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
)

// AdminKeyFile is the name of the bootstrap admin key inside the data
// directory.
const AdminKeyFile = "admin.key"

// Bootstrap writes a first admin API key to <dataDir>/admin.key (mode
// 0600) when the store has no API key at all. It logs the path, never the
// key. It returns the path it wrote, or "" when the store already had keys.
func (s *Server) Bootstrap(ctx context.Context, dataDir string) (string, error) {
	n, err := s.store.CountAPIKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("count api keys: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	path := filepath.Join(dataDir, AdminKeyFile)
	// Write the file first: a key in the store that nobody can read would
	// lock the operator out.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	key, err := admin.CreateAPIKey(ctx, s.store, api.CreateAPIKeyRequest{Name: "bootstrap-admin", Admin: true})
	if err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	if _, err := f.WriteString(key.Key + "\n"); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("bootstrap admin key: %w", err)
	}
	s.log.Info("wrote bootstrap admin API key", "path", path, "key_id", key.ID)
	return path, nil
}
