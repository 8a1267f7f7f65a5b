package installer

import (
	"bytes"
	"fmt"
	"io/fs"
	"os/exec"
)

// Windows has no numeric owners; ownership is left to the ACL.
func fileOwner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// restrictACL replaces the inherited ACL (under ProgramData, every user may
// read) with full control for SYSTEM and Administrators only. The accounts
// are named by SID, which does not depend on the system's language.
func restrictACL(path string, dir bool) error {
	inherit := ""
	if dir {
		inherit = "(OI)(CI)"
	}
	out, err := exec.Command("icacls", path, "/inheritance:r",
		"/grant:r", "*S-1-5-18:"+inherit+"F", "/grant:r", "*S-1-5-32-544:"+inherit+"F").CombinedOutput()
	if err != nil {
		return fmt.Errorf("restrict access to %s: icacls: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}
