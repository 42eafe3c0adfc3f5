package checkpoints

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"

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

// madvPopulateRead maps pages in one call (Linux 5.14+).
const madvPopulateRead = unix.MADV_POPULATE_READ

// AvailableMemory is the memory the system can give without swapping
// (MemAvailable, in bytes), or 0 when unknown.
func AvailableMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
