//go:build ignore

// asm_gen writes kernels_amd64.s: the AVX-512 and AVX2 FMA micro-kernels and
// the row dot-product kernels of the float32 GEMM. Run: go run asm_gen.go
package main

import (
	"fmt"
	"os"
	"strings"
)

var out strings.Builder

func p(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

// kernel writes a micro-kernel that runs one row panel of A against
// panels consecutive column panels of B: for each panel t it computes
// C_t[MR×NR] = alpha·A·B_t (acc == 0) or C_t += alpha·A·B_t (acc != 0) over
// a depth of kc, where A(r, p) is a[r*rs + p*ks] (a packed panel has
// rs = 1, ks = MR; a row-major matrix rs = lda, ks = 1), B_t is the packed
// panel at b[t*bp:] (B_t(p, q) = b[t*bp + p*NR + q]) and C_t starts at
// c[t*NR] with row stride ldc. vecs is the number of vector registers per row of C (NR =
// vecs*lanes). Rows are reached from bases three rows apart (rows 3i,
// 3i+1, 3i+2 at base i, base i + rs, base i + 2rs), so MR is a multiple
// of 3 up to 12.
func kernel(name, reg string, lanes, mr, vecs int, zero string) {
	nr := lanes * vecs
	vbytes := lanes * 4
	bases := []string{"AX", "R10", "R11", "R12"}[:mr/3]
	p("// func %s(kc int, a *float32, rs, ks int, b *float32, bp int, c *float32, ldc int, alpha float32, acc, panels int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $24-88", name)
	p("\tMOVQ rs+16(FP), R8")
	p("\tMOVQ ks+24(FP), R9")
	p("\tMOVQ ldc+56(FP), SI")
	p("\tSHLQ $2, R8")
	p("\tSHLQ $2, R9")
	p("\tSHLQ $2, SI")
	p("\tMOVQ b+32(FP), BX")
	p("\tMOVQ c+48(FP), DI")
	p("\tMOVQ panels+80(FP), DX")
	p("\tMOVQ DX, 16(SP)") // panels left
	p("%s_panel:", name)
	p("\tMOVQ BX, 0(SP)") // this panel's B and C
	p("\tMOVQ DI, 8(SP)")
	p("\tMOVQ kc+0(FP), CX")
	p("\tMOVQ a+8(FP), AX")
	for i := 1; i < len(bases); i++ {
		p("\tLEAQ (%s)(R8*2), %s", bases[i-1], bases[i])
		p("\tADDQ R8, %s", bases[i])
	}
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
		addr := "(" + bases[r/3] + ")"
		switch r % 3 {
		case 1:
			addr += "(R8*1)"
		case 2:
			addr += "(R8*2)"
		}
		p("\tVBROADCASTSS %s, %s%d", addr, reg, br)
		for v := 0; v < vecs; v++ {
			p("\tVFMADD231PS %s%d, %s%d, %s%d", reg, bReg+v, reg, br, reg, r*vecs+v)
		}
	}
	for _, b := range bases {
		p("\tADDQ R9, %s", b)
	}
	p("\tADDQ $%d, BX", nr*4)
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("%s_store:", name)
	al := bc[0]
	p("\tVBROADCASTSS alpha+64(FP), %s%d", reg, al)
	p("\tMOVQ acc+72(FP), DX")
	p("\tTESTQ DX, DX")
	p("\tJZ %s_set", name)
	store := func(acc bool) {
		for r := 0; r < mr; r++ {
			for v := 0; v < vecs; v++ {
				a := r*vecs + v
				if acc {
					p("\tVFMADD213PS %d(DI), %s%d, %s%d", v*vbytes, reg, al, reg, a)
				} else {
					p("\tVMULPS %s%d, %s%d, %s%d", reg, al, reg, a, reg, a)
				}
				p("\tVMOVUPS %s%d, %d(DI)", reg, a, v*vbytes)
			}
			if r < mr-1 {
				p("\tADDQ SI, DI")
			}
		}
	}
	store(true)
	p("\tJMP %s_next", name)
	p("%s_set:", name)
	store(false)
	p("%s_next:", name)
	p("\tMOVQ bp+40(FP), DX")
	p("\tSHLQ $2, DX")
	p("\tMOVQ 0(SP), BX")
	p("\tADDQ DX, BX")
	p("\tMOVQ 8(SP), DI")
	p("\tADDQ $%d, DI", nr*4)
	p("\tDECQ 16(SP)")
	p("\tJNZ %s_panel", name)
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

// copyRows writes a function copying rows rows of w floats (w in 6, 12,
// 16, 32), from src with row stride ss to dst with row stride ds: the
// packing of A panels (mr values per depth step) and B panels (nr values).
func copyRows(name string, w int) {
	p("// func %s(dst *float32, ds int, src *float32, ss, rows int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-40", name)
	p("\tMOVQ dst+0(FP), DI")
	p("\tMOVQ ds+8(FP), DX")
	p("\tMOVQ src+16(FP), SI")
	p("\tMOVQ ss+24(FP), R8")
	p("\tMOVQ rows+32(FP), CX")
	p("\tSHLQ $2, DX")
	p("\tSHLQ $2, R8")
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	p("%s_loop:", name)
	type mv struct {
		op, reg string
		off     int
	}
	var mvs []mv
	for off := 0; off < w*4; {
		switch rest := w*4 - off; {
		case rest >= 32:
			mvs = append(mvs, mv{"VMOVUPS", "Y", off})
			off += 32
		case rest >= 16:
			mvs = append(mvs, mv{"VMOVUPS", "X", off})
			off += 16
		default:
			mvs = append(mvs, mv{"VMOVSD", "X", off})
			off += 8
		}
	}
	for i, m := range mvs {
		p("\t%s %d(SI), %s%d", m.op, m.off, m.reg, i)
	}
	for i, m := range mvs {
		p("\t%s %s%d, %d(DI)", m.op, m.reg, i, m.off)
	}
	p("\tADDQ R8, SI")
	p("\tADDQ DX, DI")
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("\tVZEROUPPER")
	p("%s_done:", name)
	p("\tRET")
	p("")
}

// transpose writes a function that transposes 8 rows of k floats (k a
// multiple of 8), row stride ss, into k rows of 8 floats, row stride ds:
// dst[p*ds + q] = src[q*ss + p]. It packs B panels from a transposed B.
func transpose(name string) {
	p("// func %s(dst *float32, ds int, src *float32, ss, k int)", name)
	p("TEXT ·%s(SB), NOSPLIT, $0-40", name)
	p("\tMOVQ dst+0(FP), DI")
	p("\tMOVQ ds+8(FP), DX")
	p("\tMOVQ src+16(FP), SI")
	p("\tMOVQ ss+24(FP), R8")
	p("\tMOVQ k+32(FP), CX")
	p("\tSHLQ $2, DX")
	p("\tSHLQ $2, R8")
	p("\tSHRQ $3, CX")
	p("\tJZ %s_done", name)
	p("\tLEAQ (R8)(R8*2), R9")  // 3*ss
	p("\tLEAQ (DX)(DX*2), R10") // 3*ds
	p("%s_loop:", name)
	// Rows q = 0..7 of the 8×8 block: SI, SI+ss, SI+2ss, SI+3ss, then R11 = SI+4ss onward.
	p("\tLEAQ (SI)(R8*4), R11")
	p("\tVMOVUPS (SI), Y0")
	p("\tVMOVUPS (SI)(R8*1), Y1")
	p("\tVMOVUPS (SI)(R8*2), Y2")
	p("\tVMOVUPS (SI)(R9*1), Y3")
	p("\tVMOVUPS (R11), Y4")
	p("\tVMOVUPS (R11)(R8*1), Y5")
	p("\tVMOVUPS (R11)(R8*2), Y6")
	p("\tVMOVUPS (R11)(R9*1), Y7")
	// Interleave pairs of rows, then pairs of pairs, then the 128-bit halves.
	p("\tVUNPCKLPS Y1, Y0, Y8")
	p("\tVUNPCKHPS Y1, Y0, Y9")
	p("\tVUNPCKLPS Y3, Y2, Y10")
	p("\tVUNPCKHPS Y3, Y2, Y11")
	p("\tVUNPCKLPS Y5, Y4, Y12")
	p("\tVUNPCKHPS Y5, Y4, Y13")
	p("\tVUNPCKLPS Y7, Y6, Y14")
	p("\tVUNPCKHPS Y7, Y6, Y15")
	p("\tVSHUFPS $0x44, Y10, Y8, Y0")
	p("\tVSHUFPS $0xee, Y10, Y8, Y1")
	p("\tVSHUFPS $0x44, Y11, Y9, Y2")
	p("\tVSHUFPS $0xee, Y11, Y9, Y3")
	p("\tVSHUFPS $0x44, Y14, Y12, Y4")
	p("\tVSHUFPS $0xee, Y14, Y12, Y5")
	p("\tVSHUFPS $0x44, Y15, Y13, Y6")
	p("\tVSHUFPS $0xee, Y15, Y13, Y7")
	p("\tVPERM2F128 $0x20, Y4, Y0, Y8")
	p("\tVPERM2F128 $0x20, Y5, Y1, Y9")
	p("\tVPERM2F128 $0x20, Y6, Y2, Y10")
	p("\tVPERM2F128 $0x20, Y7, Y3, Y11")
	p("\tVPERM2F128 $0x31, Y4, Y0, Y12")
	p("\tVPERM2F128 $0x31, Y5, Y1, Y13")
	p("\tVPERM2F128 $0x31, Y6, Y2, Y14")
	p("\tVPERM2F128 $0x31, Y7, Y3, Y15")
	p("\tLEAQ (DI)(DX*4), R12")
	p("\tVMOVUPS Y8, (DI)")
	p("\tVMOVUPS Y9, (DI)(DX*1)")
	p("\tVMOVUPS Y10, (DI)(DX*2)")
	p("\tVMOVUPS Y11, (DI)(R10*1)")
	p("\tVMOVUPS Y12, (R12)")
	p("\tVMOVUPS Y13, (R12)(DX*1)")
	p("\tVMOVUPS Y14, (R12)(DX*2)")
	p("\tVMOVUPS Y15, (R12)(R10*1)")
	p("\tADDQ $32, SI")
	p("\tLEAQ (DI)(DX*8), DI")
	p("\tDECQ CX")
	p("\tJNZ %s_loop", name)
	p("\tVZEROUPPER")
	p("%s_done:", name)
	p("\tRET")
	p("")
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
	// The AVX-512 kernel's twelve-row addressing in AVX2 registers, for
	// the tests on machines without AVX-512.
	kernel("kernelAVX2x12", "Y", 8, mrAVX512, 1, "VXORPS")
	for _, w := range []int{6, 12, 16, 32} {
		copyRows(fmt.Sprintf("copyRows%d", w), w)
	}
	transpose("transpose8")
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
