package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
)

func TestExpiresIn(t *testing.T) {
	tests := map[string]struct {
		in   string
		want time.Duration
		err  bool
	}{
		"days":           {in: "90d", want: 90 * 24 * time.Hour},
		"hours":          {in: "12h", want: 12 * time.Hour},
		"go duration":    {in: "1h30m", want: 90 * time.Minute},
		"ten years":      {in: "3650d", want: 3650 * 24 * time.Hour},
		"too long":       {in: "3651d", err: true},
		"zero":           {in: "0d", err: true},
		"negative":       {in: "-1h", err: true},
		"no unit":        {in: "90", err: true},
		"fraction days":  {in: "1.5d", err: true},
		"word":           {in: "soon", err: true},
		"empty":          {in: "", err: true},
		"days and hours": {in: "1d12h", err: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var l lifetime
			err := l.Set(tc.in)
			if tc.err {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.in)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, l.d)
			now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
			assert.Equal(t, now.Add(tc.want), *l.from(now))
		})
	}
	var unset lifetime
	assert.Nil(t, unset.from(time.Now()), "no flag, no expiry")
}

func TestAPIKeyListText(t *testing.T) {
	past, future := time.Now().Add(-time.Hour).UTC(), time.Now().Add(time.Hour).UTC()
	var out bytes.Buffer
	require.NoError(t, printAPIKeyList(&out, api.APIKeyList{APIKeys: []api.APIKey{
		{ID: "k1", Name: "ops", Admin: true, CreatedAt: t0, LastUsedAt: &t0},
		{ID: "k2", Name: "ci\x1b[2J", Workspace: "acme", CreatedAt: t0, ExpiresAt: &future},
		{ID: "k3", Name: "old", Workspace: "acme", CreatedAt: t0, ExpiresAt: &past},
		{ID: "k4", Name: "gone", Workspace: "acme", CreatedAt: t0, RevokedAt: &t0},
	}}))
	lines := []string{
		`ID\s+NAME\s+SCOPE\s+CREATED\s+EXPIRES\s+LAST USED\s+STATE`,
		`k1\s+ops\s+admin\s+2025-06-01T12:00:00Z\s+never\s+2025-06-01T12:00:00Z\s+active`,
		`k2\s+ci\?\[2J\s+workspace acme\s+2025-06-01T12:00:00Z\s+` + future.Format(time.RFC3339) + `\s+never\s+active`,
		`k3\s+old\s+workspace acme\s+\S+\s+\S+\s+never\s+expired`,
		`k4\s+gone\s+workspace acme\s+\S+\s+never\s+never\s+revoked 2025-06-01T12:00:00Z`,
	}
	for _, l := range lines {
		assert.Regexp(t, l, out.String())
	}
}
