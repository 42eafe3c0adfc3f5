//go:build unix

package checkpoints

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapping is a read-only memory map of a whole file.
type mapping struct {
	f    *os.File
	data []byte
}

func newMapping(f *os.File, size int64) (mapping, error) {
	if size == 0 {
		return mapping{f: f}, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return mapping{}, fmt.Errorf("mmap: %w", err)
	}
	return mapping{f: f, data: data}, nil
}

func (m mapping) slice(begin, end int64) ([]byte, error) {
	if begin < 0 || end > int64(len(m.data)) || begin > end {
		return nil, fmt.Errorf("range [%d, %d) outside the mapped %d bytes", begin, end, len(m.data))
	}
	return m.data[begin:end:end], nil
}

// release drops the whole pages inside [begin, end) from this process's
// resident set; the data stays in the page cache and is re-read on access.
func (m mapping) release(begin, end int64) {
	page := int64(os.Getpagesize())
	b := (begin + page - 1) / page * page
	e := end / page * page
	if e > b {
		_ = unix.Madvise(m.data[b:e], unix.MADV_DONTNEED)
	}
}

func (m mapping) close() error {
	var err error
	if m.data != nil {
		err = unix.Munmap(m.data)
	}
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	return err
}
