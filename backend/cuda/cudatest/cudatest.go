// Package cudatest opens the CUDA backend for tests of the packages that
// use it, on the CPU stand-ins for the CUDA libraries (package emu):
// kernels compiled as host code, bfloat16 storage exactly as on a GPU.
// Only tests import it.
package cudatest

import (
	"sync"
	"testing"

	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/backend/cuda/emu"
)

var (
	once sync.Once
	b    *cuda.Backend
	err  error
)

// Backend returns the CUDA backend on the stand-ins, opened once per test
// process (the libraries are found when first loaded, so nothing in the
// process may have loaded others before). It skips the test when the
// stand-ins cannot be built for want of a compiler, unless they are
// required (MINITRON_REQUIRE_EMU=1).
func Backend(t testing.TB) *cuda.Backend {
	t.Helper()
	dir := emu.Dir(t)
	once.Do(func() {
		emu.Setenv(t, dir)
		b, err = cuda.Open(cuda.Options{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
