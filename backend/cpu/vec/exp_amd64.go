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

func init() {
	level := strings.ToLower(os.Getenv("MINITRON_GEMM")) // the same switch as the matmul kernels
	switch {
	case level == "generic":
	case cpu.X86.HasAVX512F && level != "avx2":
		expKernel = func(v []float32) { expAVX512(&v[0], len(v)) }
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		expKernel = func(v []float32) { expAVX2(&v[0], len(v)) }
	}
}
