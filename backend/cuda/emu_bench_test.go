package cuda

import (
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/backend/cuda/emu"
)

// Benchmarks of the CPU stand-ins for the CUDA libraries, run in this
// process (go test -run '^$' -bench Emu ./backend/cuda/): what a launch,
// a fiber, a shuffle and a barrier cost (wall and CPU time: on a shared
// machine the CPU time is the steadier figure), and the CUDA backend's
// matrix product on the stand-ins against the CPU backend's (the anchor),
// as a ratio.

func emuBench(b *testing.B) *gpu {
	b.Helper()
	emu.Setenv(b, emu.Dir(b))
	return emuDevice(b, 0)
}

func benchLaunch(b *testing.B, g *gpu, name string, grid, block uint32, n int, per float64, unit string) {
	b.Helper()
	out := g.mustMalloc(b, int64(grid*block)*4)
	args := []arg{argPtr(out)}
	if name != "nop" {
		args = append(args, argInt(n))
	}
	b.ResetTimer()
	cpu0 := processCPU()
	for range b.N {
		if err := g.launch(name, [3]uint32{grid, 1, 1}, [3]uint32{block, 1, 1}, 0, args); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/per, unit)
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N)/per, "cpu-"+unit)
}

// BenchmarkEmuLaunch: an empty kernel, 64 blocks of 256 threads.
func BenchmarkEmuLaunch(b *testing.B) {
	benchLaunch(b, emuBench(b), "nop", 64, 256, 0, 64*256, "ns/thread")
}

// BenchmarkEmuShuffle: 256 xor shuffles per lane, 8 blocks of 256 threads.
func BenchmarkEmuShuffle(b *testing.B) {
	benchLaunch(b, emuBench(b), "shuffles", 8, 256, 256, 8*256*256, "ns/lane-shuffle")
}

// BenchmarkEmuBarrier: 64 __syncthreads per thread, 8 blocks of 256 threads.
func BenchmarkEmuBarrier(b *testing.B) {
	benchLaunch(b, emuBench(b), "barriers", 8, 256, 64, 8*256*64, "ns/thread-barrier")
}

// BenchmarkEmuMatMul: a 512x512x512 product in bf16 through cuBLAS on the
// stand-ins, and in float32 on the CPU backend; "x-cpu" is the ratio of
// their times.
func BenchmarkEmuMatMul(b *testing.B) {
	emu.Setenv(b, emu.Dir(b))
	gb, err := Open(Options{})
	if err != nil {
		b.Fatal(err)
	}
	const n = 512
	x := make([]float32, n*n)
	for i := range x {
		x[i] = float32(i%17) - 8
	}
	run := func(be backend.Backend, iters int) float64 {
		a, err := be.FromFloat32(x, n, n)
		if err != nil {
			b.Fatal(err)
		}
		c, _ := be.New(be.FloatDType(), n, n)
		if err := be.MatMul(c, a, a, false, true, 1, 0); err != nil { // warm up
			b.Fatal(err)
		}
		b.StartTimer()
		start := b.Elapsed()
		for range iters {
			if err := be.MatMul(c, a, a, false, true, 1, 0); err != nil {
				b.Fatal(err)
			}
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		return float64((b.Elapsed() - start).Nanoseconds())
	}
	b.StopTimer()
	b.ResetTimer()
	te := run(gb, b.N)
	tc := run(cpu.New(), b.N)
	b.ReportMetric(2*n*n*n*float64(b.N)/te, "GFLOP/s")
	b.ReportMetric(te/tc, "x-cpu")
}
