//go:build !linux

package diskio

import (
	"errors"
	"os"
)

var errNoDirect = errors.New("direct I/O is not available on this system")

// OpenDirect reports that reads bypassing the page cache are not available.
func OpenDirect(path string) (*os.File, error) { return nil, errNoDirect }

// openDirectWrite reports that writes bypassing the page cache are not
// available.
func openDirectWrite(path string) (*os.File, error) { return nil, errNoDirect }

// IsRefused reports whether err is what a refused direct read or write
// returns (the file system does not take direct I/O).
func IsRefused(err error) bool { return errors.Is(err, errNoDirect) }

// startWriteback is a no-op where the system has no sync_file_range: the
// final fsync writes everything.
func startWriteback(f *os.File, off, n int64) {}

// waitWriteback is a no-op here (see startWriteback).
func waitWriteback(f *os.File, off, n int64) {}
