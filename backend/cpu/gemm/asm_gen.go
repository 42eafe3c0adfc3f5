//go:build ignore

// asm_gen writes kernels_amd64.s: the AVX-512 and AVX2 FMA micro-kernels and
// dot-product kernels of the float32 GEMM. Run: go run asm_gen.go
package main

import (
	"fmt"
	"os"
	"strings"
)

var out strings.Builder

func p(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

// kernel writes a micro-kernel computing C[MR×NR] += Apanel·Bpanel, where the
// packed A panel is kc×MR (k-major) and the packed B panel kc×NR.
// vecs is the number of vector registers per row of C (NR = vecs*lanes).
func kernel(name, reg string, lanes, mr, vecs int, zero string) {
	nr := lanes * vecs
	vbytes := lanes * 4
	p("// func %s(kc int, a, b, c *float32, ldc int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-40", name)
	p("\tMOVQ kc+0(FP), CX")
	p("\tMOVQ a+8(FP), AX")
	p("\tMOVQ b+16(FP), BX")
	p("\tMOVQ c+24(FP), DI")
	p("\tMOVQ ldc+32(FP), SI")
	p("\tSHLQ $2, SI")
	nacc := mr * vecs
	for i := 0; i < nacc; i++ {
		p("\t%s %s%d, %s%d, %s%d", zero, reg, i, reg, i, reg, i)
	}
	bReg := nacc                              // first register holding B
	bc := []int{bReg + vecs, bReg + vecs + 1} // broadcast registers
	p("\tTESTQ CX, CX")
	p("\tJZ %s_store", name)
	p("%s_loop:", name)
	for v := 0; v < vecs; v++ {
		p("\tVMOVUPS %d(BX), %s%d", v*vbytes, reg, bReg+v)
	}
	for r := 0; r < mr; r++ {
		br := bc[r%2]
		p("\tVBROADCASTSS %d(AX), %s%d", r*4, reg, br)
		for v := 0; v < vecs; v++ {
			p("\tVFMADD231PS %s%d, %s%d, %s%d", reg, bReg+v, reg, br, reg, r*vecs+v)
		}
	}
	p("\tADDQ $%d, AX", mr*4)
	p("\tADDQ $%d, BX", nr*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_store:", name)
	for r := 0; r < mr; r++ {
		for v := 0; v < vecs; v++ {
			p("\tVADDPS %d(DI), %s%d, %s%d", v*vbytes, reg, r*vecs+v, reg, r*vecs+v)
			p("\tVMOVUPS %s%d, %d(DI)", reg, r*vecs+v, v*vbytes)
		}
		if r < mr-1 {
			p("\tADDQ SI, DI")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("")
}

// dot writes a kernel that stores, for r in 0..3, the lane-wise partial sums
// of a[0:n]·b[r*ldb : r*ldb+n] into out[r*lanes : (r+1)*lanes]; n is a
// multiple of 2*lanes. The caller reduces the lanes and handles tails.
func dot(name, reg string, lanes int, zero string) {
	vbytes := lanes * 4
	p("// func %s(n int, a, b *float32, ldb int, out *float32)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-40", name)
	p("\tMOVQ n+0(FP), CX")
	p("\tMOVQ a+8(FP), AX")
	p("\tMOVQ b+16(FP), BX")
	p("\tMOVQ ldb+24(FP), SI")
	p("\tMOVQ out+32(FP), DI")
	p("\tSHLQ $2, SI")
	p("\tLEAQ (BX)(SI*1), R8")
	p("\tLEAQ (R8)(SI*1), R9")
	p("\tLEAQ (R9)(SI*1), R10")
	for i := 0; i < 8; i++ {
		p("\t%s %s%d, %s%d, %s%d", zero, reg, i, reg, i, reg, i)
	}
	p("\tSHRQ $%d, CX", map[int]int{8: 4, 16: 5}[lanes])
	p("\tJZ %s_done", name)
	p("%s_loop:", name)
	p("\tVMOVUPS (AX), %s8", reg)
	p("\tVMOVUPS %d(AX), %s9", vbytes, reg)
	for r, base := range []string{"BX", "R8", "R9", "R10"} {
		p("\tVFMADD231PS (%s), %s8, %s%d", base, reg, reg, r)
		p("\tVFMADD231PS %d(%s), %s9, %s%d", vbytes, base, reg, reg, r+4)
	}
	p("\tADDQ $%d, AX", 2*vbytes)
	for _, base := range []string{"BX", "R8", "R9", "R10"} {
		p("\tADDQ $%d, %s", 2*vbytes, base)
	}
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_done:", name)
	for r := 0; r < 4; r++ {
		p("\tVADDPS %s%d, %s%d, %s%d", reg, r+4, reg, r, reg, r)
		p("\tVMOVUPS %s%d, %d(DI)", reg, r, r*vbytes)
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("")
}

// rows writes a kernel computing out[r] = a[0:n]·b[r*ldb : r*ldb+n] for
// r in 0..rows-1, reading each row of b sequentially with four accumulators
// and prefetching ahead; n is a multiple of 4*lanes. The reduction to one
// float per row happens here, so one call covers a block of rows.
func rows(name, reg string, lanes int, zero string) {
	vb := lanes * 4
	half := map[int]string{8: "X", 16: "Y"}[lanes]
	p("// func %s(n int, a, b *float32, ldb int, rows int, out *float32)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-48", name)
	p("\tMOVQ n+0(FP), DX")
	p("\tMOVQ a+8(FP), AX")
	p("\tMOVQ b+16(FP), BX")
	p("\tMOVQ ldb+24(FP), SI")
	p("\tMOVQ rows+32(FP), R9")
	p("\tMOVQ out+40(FP), DI")
	p("\tSHLQ $2, SI")
	p("\tSHRQ $%d, DX", map[int]int{8: 5, 16: 6}[lanes])
	p("%s_row:", name)
	p("\tTESTQ R9, R9")
	p("\tJZ %s_end", name)
	for i := 0; i < 4; i++ {
		p("\t%s %s%d, %s%d, %s%d", zero, reg, i, reg, i, reg, i)
	}
	p("\tMOVQ AX, R10")
	p("\tMOVQ BX, R11")
	p("\tMOVQ DX, CX")
	p("%s_loop:", name)
	for i := 0; i < 4; i++ {
		p("\tVMOVUPS %d(R10), %s%d", i*vb, reg, 4+i)
	}
	for i := 0; i < 4; i++ {
		p("\tVFMADD231PS %d(R11), %s%d, %s%d", i*vb, reg, 4+i, reg, i)
	}
	p("\tADDQ $%d, R10", 4*vb)
	p("\tADDQ $%d, R11", 4*vb)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("\tVADDPS %s1, %s0, %s0", reg, reg, reg)
	p("\tVADDPS %s3, %s2, %s2", reg, reg, reg)
	p("\tVADDPS %s2, %s0, %s0", reg, reg, reg)
	if lanes == 16 {
		p("\tVEXTRACTF64X4 $1, Z0, Y1")
		p("\tVADDPS Y1, Y0, Y0")
	}
	p("\tVEXTRACTF128 $1, Y0, X1")
	p("\tVADDPS X1, X0, X0")
	p("\tVHADDPS X0, X0, X0")
	p("\tVHADDPS X0, X0, X0")
	p("\tVMOVSS X0, (DI)")
	p("\tADDQ $4, DI")
	p("\tADDQ SI, BX")
	p("\tDECQ R9")
	p("\tJMP %s_row", name)
	p("%s_end:", name)
	p("\tVZEROUPPER")
	p("\tRET")
	p("")
	_ = half
}

func main() {
	p("// Code generated by asm_gen.go; DO NOT EDIT.")
	p("")
	p("//go:build amd64 && !purego")
	p("")
	p("#include \"textflag.h\"")
	p("")
	kernel("kernelAVX512", "Z", 16, mrAVX512, 2, "VPXORD")
	kernel("kernelAVX2", "Y", 8, mrAVX2, 2, "VXORPS")
	dot("dot4AVX512", "Z", 16, "VPXORD")
	dot("dot4AVX2", "Y", 8, "VXORPS")
	rows("dotRowsAVX512", "Z", 16, "VPXORD")
	rows("dotRowsAVX2", "Y", 8, "VXORPS")
	if err := os.WriteFile("kernels_amd64.s", []byte(out.String()), 0o644); err != nil {
		panic(err)
	}
}

const (
	mrAVX512 = 12
	mrAVX2   = 6
)
