// System-specific I/O: direct reads and writes, write-back, page-cache residency.

package checkpoints

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openDirect opens a file for reads that bypass the page cache.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
}

// openDirectWrite opens an existing file for writes that bypass the page
// cache.
func openDirectWrite(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
}

// isInvalid reports whether err is what a refused direct read or write
// returns.
func isInvalid(err error) bool { return errors.Is(err, unix.EINVAL) }

// residentFraction samples up to n pages spread over the mapping and
// returns the fraction the page cache holds (mincore; nothing is read).
func (m mapping) residentFraction(n int) float64 {
	page := os.Getpagesize()
	pages := len(m.data) / page
	if pages == 0 {
		return 1
	}
	n = min(n, pages)
	var vec [1]byte
	in := 0
	for i := range n {
		p := unsafe.Pointer(&m.data[(i*pages/n)*page])
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(p), uintptr(page), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			return -1
		}
		in += int(vec[0] & 1)
	}
	return float64(in) / float64(n)
}

// startWriteback asks the system to begin writing bytes [off, off+n) of f
// to disk now, without waiting.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback returns once bytes [off, off+n) of f are on disk.
func waitWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}
