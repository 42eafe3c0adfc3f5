//go:build !linux

package checkpoints

import "os"

// startWriteback is a no-op where the system has no sync_file_range: the
// final fsync writes everything.
func startWriteback(f *os.File, off, n int64) {}

// waitWriteback is a no-op here (see startWriteback).
func waitWriteback(f *os.File, off, n int64) {}
