//go:build unix

// Package cputime reads the CPU time this process has used (user and
// system), which benchmarks report beside wall time: a loaded machine
// inflates it far less.
package cputime

import (
	"syscall"
	"time"
)

// Now returns the process's CPU time so far.
func Now() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
