//go:build amd64 && !purego

#include "textflag.h"

// Elementwise AVX2 kernels over n floats, n a multiple of 8; the Go
// wrappers do the tails with the same operations in the same order.

// func relu2AVX2(out, x *float32, n int)
// out = max(x, 0)²
TEXT ·relu2AVX2(SB), NOSPLIT, $0-24
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   relu2done
	VXORPS Y15, Y15, Y15
relu2loop:
	VMOVUPS (SI), Y0
	VMAXPS Y15, Y0, Y0
	VMULPS Y0, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  relu2loop
	VZEROUPPER
relu2done:
	RET

// func relu2GradAVX2(dx, dout, x *float32, n int)
// dx = dout*2*max(x, 0)
TEXT ·relu2GradAVX2(SB), NOSPLIT, $0-32
	MOVQ dx+0(FP), DI
	MOVQ dout+8(FP), SI
	MOVQ x+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   relu2gdone
	VXORPS Y15, Y15, Y15
relu2gloop:
	VMOVUPS (DX), Y0
	VMAXPS Y15, Y0, Y0
	VMOVUPS (SI), Y1
	VADDPS Y1, Y1, Y1 // dout*2, exactly
	VMULPS Y0, Y1, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  relu2gloop
	VZEROUPPER
relu2gdone:
	RET

// func axpbyAVX2(dst, x, y *float32, n int, a, b float32)
// dst = a*x + b*y (two products, then the sum)
TEXT ·axpbyAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS a+32(FP), Y14
	VBROADCASTSS b+36(FP), Y15
	SHRQ $3, CX
	JZ   axpbydone
axpbyloop:
	VMULPS (SI), Y14, Y0
	VMULPS (DX), Y15, Y1
	VADDPS Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  axpbyloop
	VZEROUPPER
axpbydone:
	RET

// func scaleAVX2(v *float32, n int, a float32)
// v = v*a
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ v+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS a+16(FP), Y15
	SHRQ $3, CX
	JZ   scaledone
scaleloop:
	VMULPS (DI), Y15, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	DECQ CX
	JNZ  scaleloop
	VZEROUPPER
scaledone:
	RET

// func mulSubAVX2(dst, p, d *float32, n int, c float32)
// dst = p*(d - c)
TEXT ·mulSubAVX2(SB), NOSPLIT, $0-36
	MOVQ dst+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ d+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS c+32(FP), Y15
	SHRQ $3, CX
	JZ   mulsubdone
mulsubloop:
	VMOVUPS (DX), Y0
	VSUBPS Y15, Y0, Y0
	VMULPS (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  mulsubloop
	VZEROUPPER
mulsubdone:
	RET

// func rotateAVX2(x1, x2, cos, sin *float32, n int)
// (x1, x2) = (x1·cos − x2·sin, x2·cos + x1·sin), products rounded, then summed
TEXT ·rotateAVX2(SB), NOSPLIT, $0-40
	MOVQ x1+0(FP), DI
	MOVQ x2+8(FP), SI
	MOVQ cos+16(FP), DX
	MOVQ sin+24(FP), R8
	MOVQ n+32(FP), CX
	SHRQ $3, CX
	JZ   rotdone
rotloop:
	VMOVUPS (DI), Y0      // a
	VMOVUPS (SI), Y1      // c
	VMOVUPS (DX), Y2      // cos
	VMOVUPS (R8), Y3      // sin
	VMULPS Y2, Y0, Y4     // a·cos
	VMULPS Y3, Y1, Y5     // c·sin
	VSUBPS Y5, Y4, Y4
	VMULPS Y2, Y1, Y5     // c·cos
	VMULPS Y3, Y0, Y6     // a·sin
	VADDPS Y6, Y5, Y5
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, (SI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	DECQ CX
	JNZ  rotloop
	VZEROUPPER
rotdone:
	RET
