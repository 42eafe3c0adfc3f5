//go:build amd64 && !purego

package vec

import (
	"os"
	"strings"

	"golang.org/x/sys/cpu"
)

//go:noescape
func expAVX512(p *float32, n int)

//go:noescape
func expAVX2(p *float32, n int)

//go:noescape
func expSumAVX2(dst, src *float32, n int, scale, shift float32) float64

//go:noescape
func maxAVX2(p *float32, n int) float32

func init() {
	level := strings.ToLower(os.Getenv("MINITRON_GEMM")) // the same switch as the matmul kernels
	switch {
	case level == "generic":
	case cpu.X86.HasAVX512F && level != "avx2":
		expKernel = func(v []float32) { expAVX512(&v[0], len(v)) }
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		expKernel = func(v []float32) { expAVX2(&v[0], len(v)) }
	}
	if level != "generic" && cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		expSumKernel = func(dst, src []float32, scale, shift float32) float64 {
			return expSumAVX2(&dst[0], &src[0], len(src), scale, shift)
		}
		maxKernel = func(v []float32) float32 { return maxAVX2(&v[0], len(v)) }
	}
}
