//go:build unix

package generate

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used (user and system), which a
// loaded machine inflates far less than wall time.
func cpuTime() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
