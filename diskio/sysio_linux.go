// System-specific I/O: direct reads and writes, write-back.

package diskio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// OpenDirect opens a file for reads that bypass the page cache: offsets,
// lengths and buffers must be multiples of Align (AlignedBuffer).
func OpenDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
}

// openDirectWrite opens an existing file for writes that bypass the page
// cache.
func openDirectWrite(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
}

// IsRefused reports whether err is what a refused direct read or write
// returns (the file system does not take direct I/O): the caller goes on
// through the page cache.
func IsRefused(err error) bool { return errors.Is(err, unix.EINVAL) }

// startWriteback asks the system to begin writing bytes [off, off+n) of f
// to disk now, without waiting.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback returns once bytes [off, off+n) of f are on disk.
func waitWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}
