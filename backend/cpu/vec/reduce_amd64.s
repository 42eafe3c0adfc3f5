//go:build amd64 && !purego

#include "textflag.h"
#include "vec_amd64.h"

// Reductions accumulated in float64 and the row passes of LayerNorm, AVX2,
// over n floats, n a multiple of 8 (the Go wrappers do the tails). Each
// float64 sum keeps two 4-lane accumulators (lanes 0-3 and 4-7 of every 8
// elements), added at the end.

// func sumAVX2(v *float32, n int) float64
TEXT ·sumAVX2(SB), NOSPLIT, $0-24
	MOVQ v+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	SHRQ $3, CX
	JZ   sumdone
sumloop:
	VMOVUPS (SI), Y0
	WIDEN(Y0, X0, Y1, X1, Y8, Y9)
	ADDQ $32, SI
	DECQ CX
	JNZ  sumloop
sumdone:
	HSUM(Y8, Y9, X8, X9)
	VMOVSD X8, ret+16(FP)
	VZEROUPPER
	RET

// func sumSqDevAVX2(v *float32, n int, mean float64) float64
// Σ (v−mean)², in float64.
TEXT ·sumSqDevAVX2(SB), NOSPLIT, $0-32
	MOVQ v+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mean+16(FP), Y15
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	SHRQ $3, CX
	JZ   ssddone
ssdloop:
	VMOVUPS (SI), X0
	VCVTPS2PD X0, Y1
	VSUBPD Y15, Y1, Y1
	VMULPD Y1, Y1, Y1
	VADDPD Y1, Y8, Y8
	VMOVUPS 16(SI), X0
	VCVTPS2PD X0, Y1
	VSUBPD Y15, Y1, Y1
	VMULPD Y1, Y1, Y1
	VADDPD Y1, Y9, Y9
	ADDQ $32, SI
	DECQ CX
	JNZ  ssdloop
ssddone:
	HSUM(Y8, Y9, X8, X9)
	VMOVSD X8, ret+24(FP)
	VZEROUPPER
	RET

// func dotAVX2(x, y *float32, n int) float64
// Σ x·y, each product rounded to float32, summed in float64.
TEXT ·dotAVX2(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DX
	MOVQ n+16(FP), CX
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	SHRQ $3, CX
	JZ   dotdone
dotloop:
	VMOVUPS (SI), Y0
	VMULPS (DX), Y0, Y0
	WIDEN(Y0, X0, Y1, X1, Y8, Y9)
	ADDQ $32, SI
	ADDQ $32, DX
	DECQ CX
	JNZ  dotloop
dotdone:
	HSUM(Y8, Y9, X8, X9)
	VMOVSD X8, ret+24(FP)
	VZEROUPPER
	RET

// func dotDiffAVX2(w, x, y *float32, n int) float64
// Σ w·(x−y) in float64.
TEXT ·dotDiffAVX2(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DX
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	SHRQ $3, CX
	JZ   ddone
dloop:
	VCVTPS2PD (DX), Y0
	VCVTPS2PD (DI), Y1
	VSUBPD Y1, Y0, Y0
	VCVTPS2PD (SI), Y1
	VMULPD Y1, Y0, Y0
	VADDPD Y0, Y8, Y8
	VCVTPS2PD 16(DX), Y0
	VCVTPS2PD 16(DI), Y1
	VSUBPD Y1, Y0, Y0
	VCVTPS2PD 16(SI), Y1
	VMULPD Y1, Y0, Y0
	VADDPD Y0, Y9, Y9
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  dloop
ddone:
	HSUM(Y8, Y9, X8, X9)
	VMOVSD X8, ret+32(FP)
	VZEROUPPER
	RET

// func normAVX2(out, x, w, b *float32, n int, mean, rstd float32)
// out = (x−mean)·rstd·w (+ b unless b is nil)
TEXT ·normAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ w+16(FP), DX
	MOVQ b+24(FP), R8
	MOVQ n+32(FP), CX
	VBROADCASTSS mean+40(FP), Y14
	VBROADCASTSS rstd+44(FP), Y15
	SHRQ $3, CX
	JZ   normdone
	TESTQ R8, R8
	JZ   normnob
normloop:
	VMOVUPS (SI), Y0
	VSUBPS Y14, Y0, Y0
	VMULPS Y15, Y0, Y0
	VMULPS (DX), Y0, Y0
	VADDPS (R8), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	ADDQ $32, DI
	DECQ CX
	JNZ  normloop
	JMP  normdone
normnob:
	VMOVUPS (SI), Y0
	VSUBPS Y14, Y0, Y0
	VMULPS Y15, Y0, Y0
	VMULPS (DX), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  normnob
normdone:
	VZEROUPPER
	RET

// func normGradInAVX2(xhat, dy, x, grad, w *float32, aw, ab *float64, n int, mean, rstd float32)
// xhat = (x−mean)·rstd; dy = g·w; aw += float64(g·xhat); ab += float64(g)
TEXT ·normGradInAVX2(SB), NOSPLIT, $0-72
	MOVQ xhat+0(FP), DI
	MOVQ dy+8(FP), R9
	MOVQ x+16(FP), SI
	MOVQ grad+24(FP), DX
	MOVQ w+32(FP), R8
	MOVQ aw+40(FP), R10
	MOVQ ab+48(FP), R11
	MOVQ n+56(FP), CX
	VBROADCASTSS mean+64(FP), Y14
	VBROADCASTSS rstd+68(FP), Y15
	SHRQ $3, CX
	JZ   ngidone
ngiloop:
	VMOVUPS (SI), Y0
	VSUBPS Y14, Y0, Y0
	VMULPS Y15, Y0, Y0      // xhat
	VMOVUPS Y0, (DI)
	VMOVUPS (DX), Y1        // g
	VMULPS (R8), Y1, Y2     // g·w
	VMOVUPS Y2, (R9)
	VMULPS Y1, Y0, Y0       // g·xhat
	VCVTPS2PD X0, Y3
	VADDPD (R10), Y3, Y3
	VMOVUPD Y3, (R10)
	VEXTRACTF128 $1, Y0, X0
	VCVTPS2PD X0, Y3
	VADDPD 32(R10), Y3, Y3
	VMOVUPD Y3, 32(R10)
	VCVTPS2PD X1, Y3
	VADDPD (R11), Y3, Y3
	VMOVUPD Y3, (R11)
	VEXTRACTF128 $1, Y1, X1
	VCVTPS2PD X1, Y3
	VADDPD 32(R11), Y3, Y3
	VMOVUPD Y3, 32(R11)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	ADDQ $32, DI
	ADDQ $32, R9
	ADDQ $64, R10
	ADDQ $64, R11
	DECQ CX
	JNZ  ngiloop
ngidone:
	VZEROUPPER
	RET

// func normGradOutAVX2(dx, dy, xhat *float32, n int, rstd, mdy, mdyx float32)
// dx = rstd·(dy − mdy − xhat·mdyx)
TEXT ·normGradOutAVX2(SB), NOSPLIT, $0-44
	MOVQ dx+0(FP), DI
	MOVQ dy+8(FP), SI
	MOVQ xhat+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS rstd+32(FP), Y13
	VBROADCASTSS mdy+36(FP), Y14
	VBROADCASTSS mdyx+40(FP), Y15
	SHRQ $3, CX
	JZ   ngodone
ngoloop:
	VMOVUPS (SI), Y0
	VSUBPS Y14, Y0, Y0
	VMULPS (DX), Y15, Y1
	VSUBPS Y1, Y0, Y0
	VMULPS Y13, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ  ngoloop
ngodone:
	VZEROUPPER
	RET
