//go:build !linux

package checkpoints

import (
	"errors"
	"os"
)

var errNoDirect = errors.New("direct I/O is not available on this system")

// openDirect reports that reads bypassing the page cache are not available.
func openDirect(path string) (*os.File, error) { return nil, errNoDirect }

// openDirectWrite reports that writes bypassing the page cache are not
// available.
func openDirectWrite(path string) (*os.File, error) { return nil, errNoDirect }

// isInvalid reports whether err is what a refused direct read or write
// returns.
func isInvalid(err error) bool { return errors.Is(err, errNoDirect) }

// residentFraction is unknown here (-1).
func (m mapping) residentFraction(n int) float64 { return -1 }

// startWriteback is a no-op where the system has no sync_file_range: the
// final fsync writes everything.
func startWriteback(f *os.File, off, n int64) {}

// waitWriteback is a no-op here (see startWriteback).
func waitWriteback(f *os.File, off, n int64) {}
