// Package migrate brings a store's schema up to date from the SQL files
// embedded in that store, with goose, and logs each migration it applies.
// Both stores use it, so they migrate and report alike. It holds no SQL and
// knows no database: the store passes its dialect, a database/sql handle
// and any goose options of its own (the cluster store's lock).
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

// Up applies, in order, every migration in the migrations directory of
// files that db has not seen yet.
func Up(ctx context.Context, dialect goose.Dialect, db *sql.DB, files fs.FS, log *slog.Logger, opts ...goose.ProviderOption) error {
	dir, err := fs.Sub(files, "migrations")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// No global registry: only the embedded SQL files count, never Go
	// migrations some other package registered with goose.
	opts = append([]goose.ProviderOption{goose.WithDisableGlobalRegistry(true), goose.WithSlog(log)}, opts...)
	p, err := goose.NewProvider(dialect, db, dir, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	for _, res := range results {
		log.InfoContext(ctx, "store migration applied",
			"version", res.Source.Version, "duration", res.Duration)
	}
	return nil
}
