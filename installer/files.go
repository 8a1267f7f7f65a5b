package installer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// owner is who a written file or directory belongs to; -1 leaves a field
// alone.
type owner struct{ uid, gid int }

// writeFile makes path hold data with mode and owner, replacing it
// atomically (write a sibling, then rename) when the content differs and
// fixing mode and owner in place when only those differ. It reports whether
// anything changed. The sibling is created 0600, so a secret is never
// readable by others, even for a moment.
func writeFile(path string, data []byte, mode fs.FileMode, o owner) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return fixMeta(path, mode, o)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if _, err := fixMeta(tmp.Name(), mode, o); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	done = true
	return true, nil
}

// copyFile installs the file at src as dst (see writeFile); a dst that is
// src itself is left alone.
func copyFile(src, dst string, mode fs.FileMode, o owner) (bool, error) {
	if a, err := os.Stat(src); err == nil {
		if b, err := os.Stat(dst); err == nil && os.SameFile(a, b) {
			return fixMeta(dst, mode, o)
		}
	}
	f, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return false, err
	}
	return writeFile(dst, data, mode, o)
}

// ensureDir creates dir (and missing parents, 0755 root-owned) and gives dir
// itself mode and owner. It reports whether anything changed.
func ensureDir(dir string, mode fs.FileMode, o owner) (bool, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, mode); err != nil {
			return false, err
		}
		_, err := fixMeta(dir, mode, o)
		return true, err
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	}
	return fixMeta(dir, mode, o)
}

// fixMeta gives path mode and owner, reporting whether either changed.
func fixMeta(path string, mode fs.FileMode, o owner) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	changed := false
	// Windows keeps only a read-only bit; there the ACL below does the work.
	if runtime.GOOS != "windows" && fi.Mode().Perm() != mode.Perm() {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			return false, err
		}
		changed = true
	}
	if uid, gid, ok := fileOwner(fi); ok && (o.uid >= 0 && uid != o.uid || o.gid >= 0 && gid != o.gid) {
		if err := os.Chown(path, o.uid, o.gid); err != nil {
			return false, err
		}
		changed = true
	}
	if mode.Perm()&0o077 == 0 || fi.IsDir() && mode.Perm()&0o007 == 0 {
		if err := restrictACL(path, fi.IsDir()); err != nil {
			return false, err
		}
	}
	return changed, nil
}

// removeIfExists removes path, reporting whether it was there.
func removeIfExists(path string) (bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
