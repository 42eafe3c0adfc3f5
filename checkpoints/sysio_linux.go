// System-specific I/O: page-cache residency.

package checkpoints

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

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
