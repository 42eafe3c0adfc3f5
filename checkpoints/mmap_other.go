//go:build !unix

package checkpoints

import (
	"fmt"
	"os"
)

// mapping reads tensors with ReadAt where mmap is not available.
type mapping struct {
	f    *os.File
	size int64
}

func newMapping(f *os.File, size int64) (mapping, error) { return mapping{f: f, size: size}, nil }

func (m mapping) slice(begin, end int64) ([]byte, error) {
	if begin < 0 || end > m.size || begin > end {
		return nil, fmt.Errorf("range [%d, %d) outside the %d-byte file", begin, end, m.size)
	}
	b := make([]byte, end-begin)
	_, err := m.f.ReadAt(b, begin)
	return b, err
}

func (m mapping) release(begin, end int64) {}

func (m mapping) close() error { return m.f.Close() }
