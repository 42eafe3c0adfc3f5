//go:build amd64 && !purego

#include "textflag.h"

// Constants broadcast from memory.
DATA expc<>+0(SB)/4, $1.44269504088896341   // log2e
DATA expc<>+4(SB)/4, $0.693359375            // ln2 hi
DATA expc<>+8(SB)/4, $-2.12194440e-4         // ln2 lo
DATA expc<>+12(SB)/4, $1.9875691500e-4       // c6
DATA expc<>+16(SB)/4, $1.3981999507e-3       // c5
DATA expc<>+20(SB)/4, $8.3334519073e-3       // c4
DATA expc<>+24(SB)/4, $4.1665795894e-2       // c3
DATA expc<>+28(SB)/4, $1.6666665459e-1       // c2
DATA expc<>+32(SB)/4, $5.0000001201e-1       // c1
DATA expc<>+36(SB)/4, $1.0                   // one
DATA expc<>+40(SB)/4, $88.72                 // max
DATA expc<>+44(SB)/4, $-87.33                // min
DATA expc<>+48(SB)/4, $0x7f800000            // +Inf bits
DATA expc<>+52(SB)/4, $127                   // exponent bias
DATA expc<>+56(SB)/4, $127.5
GLOBL expc<>(SB), RODATA|NOPTR, $60

// func expAVX512(p *float32, n int)
// n is a multiple of 16.
TEXT ·expAVX512(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), DI
	MOVQ n+8(FP), CX
	SHRQ $4, CX
	JZ   done512
	LEAQ expc<>(SB), SI
	VBROADCASTSS 0(SI), Z16  // log2e
	VBROADCASTSS 4(SI), Z17  // ln2 hi
	VBROADCASTSS 8(SI), Z18  // ln2 lo
	VBROADCASTSS 12(SI), Z19 // c6
	VBROADCASTSS 16(SI), Z20 // c5
	VBROADCASTSS 20(SI), Z21 // c4
	VBROADCASTSS 24(SI), Z22 // c3
	VBROADCASTSS 28(SI), Z23 // c2
	VBROADCASTSS 32(SI), Z24 // c1
	VBROADCASTSS 36(SI), Z25 // 1
	VBROADCASTSS 40(SI), Z26 // max
	VBROADCASTSS 44(SI), Z27 // min
	VBROADCASTSS 48(SI), Z28 // +Inf
loop512:
	VMOVUPS (DI), Z0
	VCMPPS $0x1e, Z26, Z0, K1   // K1 = x > max (ordered, quiet)
	VCMPPS $3, Z0, Z0, K2       // K2 = x is NaN
	VMAXPS Z27, Z0, Z1          // clamp below (NaN -> min, fixed later)
	VMINPS Z26, Z1, Z1
	VMULPS Z16, Z1, Z2          // x*log2e
	VRNDSCALEPS $0, Z2, Z2      // n = round to nearest even
	VMOVAPS Z1, Z3
	VFNMADD231PS Z17, Z2, Z3    // r = x - n*ln2hi
	VFNMADD231PS Z18, Z2, Z3    // r -= n*ln2lo
	VMOVAPS Z19, Z4
	VFMADD213PS Z20, Z3, Z4     // p = p*r + c5
	VFMADD213PS Z21, Z3, Z4
	VFMADD213PS Z22, Z3, Z4
	VFMADD213PS Z23, Z3, Z4
	VFMADD213PS Z24, Z3, Z4     // p = p*r + c1
	VMULPS Z3, Z3, Z5           // r*r
	VADDPS Z25, Z3, Z6          // 1 + r
	VFMADD231PS Z5, Z4, Z6      // p*r*r + r + 1
	VSCALEFPS Z2, Z6, Z6        // * 2^n
	VCMPPS $1, Z27, Z0, K3      // x < min -> 0
	VXORPS Z7, Z7, Z7
	VMOVAPS Z7, K3, Z6
	VMOVAPS Z28, K1, Z6         // x > max -> +Inf
	VMOVAPS Z0, K2, Z6          // NaN stays NaN
	VMOVUPS Z6, (DI)
	ADDQ $64, DI
	DECQ CX
	JNZ  loop512
	VZEROUPPER
done512:
	RET

// func expAVX2(p *float32, n int)
// n is a multiple of 8.
TEXT ·expAVX2(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), DI
	MOVQ n+8(FP), CX
	SHRQ $3, CX
	JZ   done2
	LEAQ expc<>(SB), SI
	VBROADCASTSS 0(SI), Y8   // log2e
	VBROADCASTSS 4(SI), Y9   // ln2 hi
	VBROADCASTSS 8(SI), Y10  // ln2 lo
	VBROADCASTSS 36(SI), Y11 // 1
	VBROADCASTSS 40(SI), Y12 // max
	VBROADCASTSS 44(SI), Y13 // min
	VPBROADCASTD 52(SI), Y14 // 127
	VBROADCASTSS 48(SI), Y15 // +Inf
loop2:
	VMOVUPS (DI), Y0
	VMAXPS Y13, Y0, Y1
	VMINPS Y12, Y1, Y1
	VMULPS Y8, Y1, Y2
	VROUNDPS $0, Y2, Y2         // n
	VMOVAPS Y1, Y3
	VFNMADD231PS Y9, Y2, Y3     // r = x - n*ln2hi
	VFNMADD231PS Y10, Y2, Y3    // r -= n*ln2lo
	VBROADCASTSS 12(SI), Y4
	VBROADCASTSS 16(SI), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 20(SI), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 24(SI), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 28(SI), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 32(SI), Y5
	VFMADD213PS Y5, Y3, Y4      // p
	VMULPS Y3, Y3, Y5           // r*r
	VADDPS Y11, Y3, Y6          // 1 + r
	VFMADD231PS Y5, Y4, Y6      // p*r*r + r + 1
	VBROADCASTSS 56(SI), Y5     // 2^128 is not a float32: where
	VCMPPS $0x1e, Y5, Y2, Y7    // ... n > 127.5, use n-1 and 2p
	VANDPS Y11, Y7, Y5
	VSUBPS Y5, Y2, Y2
	VANDPS Y6, Y7, Y5
	VADDPS Y5, Y6, Y6
	VCVTPS2DQ Y2, Y7            // n as int32
	VPADDD Y14, Y7, Y7
	VPSLLD $23, Y7, Y7          // 2^n
	VMULPS Y7, Y6, Y6
	VCMPPS $1, Y13, Y0, Y7      // x < min
	VANDNPS Y6, Y7, Y6          // -> 0
	VCMPPS $0x1e, Y12, Y0, Y7   // x > max
	VBLENDVPS Y7, Y15, Y6, Y6   // -> +Inf
	VCMPPS $3, Y0, Y0, Y7       // NaN
	VBLENDVPS Y7, Y0, Y6, Y6
	VMOVUPS Y6, (DI)
	ADDQ $32, DI
	DECQ CX
	JNZ  loop2
	VZEROUPPER
done2:
	RET

// func expSumAVX2(dst, src *float32, n int, scale, shift float32) float64
// dst[i] = exp(src[i]*scale - shift), returns the sum in float64; n is a
// multiple of 8. The exp is expAVX2's, constants from expc.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y14
	VBROADCASTSS shift+28(FP), Y15
	VXORPD Y9, Y9, Y9            // sums of lanes 0-3
	VXORPD Y10, Y10, Y10         // sums of lanes 4-7
	SHRQ $3, CX
	JZ   sumdone
	LEAQ expc<>(SB), R8
	VBROADCASTSS 0(R8), Y8       // log2e
	VBROADCASTSS 36(R8), Y11     // 1
	VBROADCASTSS 40(R8), Y12     // max
	VBROADCASTSS 44(R8), Y13     // min
sumloop:
	VMOVUPS (SI), Y0
	VFMSUB213PS Y15, Y14, Y0     // x = src*scale - shift
	VMAXPS Y13, Y0, Y1
	VMINPS Y12, Y1, Y1
	VMULPS Y8, Y1, Y2
	VROUNDPS $0, Y2, Y2          // n
	VMOVAPS Y1, Y3
	VBROADCASTSS 4(R8), Y4
	VFNMADD231PS Y4, Y2, Y3      // r = x - n*ln2hi
	VBROADCASTSS 8(R8), Y4
	VFNMADD231PS Y4, Y2, Y3      // r -= n*ln2lo
	VBROADCASTSS 12(R8), Y4
	VBROADCASTSS 16(R8), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 20(R8), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 24(R8), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 28(R8), Y5
	VFMADD213PS Y5, Y3, Y4
	VBROADCASTSS 32(R8), Y5
	VFMADD213PS Y5, Y3, Y4       // p
	VMULPS Y3, Y3, Y5            // r*r
	VADDPS Y11, Y3, Y6           // 1 + r
	VFMADD231PS Y5, Y4, Y6       // p*r*r + r + 1
	VBROADCASTSS 56(R8), Y5      // n > 127.5: use n-1 and 2p
	VCMPPS $0x1e, Y5, Y2, Y7
	VANDPS Y11, Y7, Y5
	VSUBPS Y5, Y2, Y2
	VANDPS Y6, Y7, Y5
	VADDPS Y5, Y6, Y6
	VCVTPS2DQ Y2, Y7
	VPBROADCASTD 52(R8), Y5      // 127
	VPADDD Y5, Y7, Y7
	VPSLLD $23, Y7, Y7           // 2^n
	VMULPS Y7, Y6, Y6
	VCMPPS $1, Y13, Y0, Y7       // x < min -> 0
	VANDNPS Y6, Y7, Y6
	VCMPPS $0x1e, Y12, Y0, Y7    // x > max -> +Inf
	VBROADCASTSS 48(R8), Y5
	VBLENDVPS Y7, Y5, Y6, Y6
	VCMPPS $3, Y0, Y0, Y7        // NaN stays NaN
	VBLENDVPS Y7, Y0, Y6, Y6
	VMOVUPS Y6, (DI)
	VCVTPS2PD X6, Y7
	VADDPD Y7, Y9, Y9
	VEXTRACTF128 $1, Y6, X7
	VCVTPS2PD X7, Y7
	VADDPD Y7, Y10, Y10
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  sumloop
sumdone:
	VADDPD Y10, Y9, Y9
	VEXTRACTF128 $1, Y9, X10
	VADDPD X10, X9, X9
	VUNPCKHPD X9, X9, X10
	VADDSD X10, X9, X9
	VMOVSD X9, ret+32(FP)
	VZEROUPPER
	RET

// func maxAVX2(p *float32, n int) float32
// n is a positive multiple of 8.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0
	VMOVAPS Y0, Y1
	VMOVAPS Y0, Y2
	VMOVAPS Y0, Y3
	MOVQ CX, DX
	SHRQ $5, DX
	JZ   max8
max32:
	VMAXPS 0(SI), Y0, Y0
	VMAXPS 32(SI), Y1, Y1
	VMAXPS 64(SI), Y2, Y2
	VMAXPS 96(SI), Y3, Y3
	ADDQ $128, SI
	DECQ DX
	JNZ  max32
max8:
	ANDQ $31, CX
	SHRQ $3, CX
	JZ   maxreduce
max8loop:
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  max8loop
maxreduce:
	VMAXPS Y1, Y0, Y0
	VMAXPS Y3, Y2, Y2
	VMAXPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET
