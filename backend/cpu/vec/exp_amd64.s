//go:build amd64 && !purego

#include "textflag.h"
#include "vec_amd64.h"

// Constants of the AVX-512 kernel, broadcast from memory.
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
GLOBL expc<>(SB), RODATA|NOPTR, $52

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

// The AVX2 exponentials read their constants from expTab (exp_amd64.go),
// each repeated in the 8 lanes of a vector, as memory operands: the loops
// keep their registers for two vectors in flight. Offsets into expTab:
#define T_LOG2E 0
#define T_LN2HI 32
#define T_LN2LO 64
#define T_C6 96
#define T_C5 128
#define T_C4 160
#define T_C3 192
#define T_C2 224
#define T_C1 256
#define T_ONE 288
#define T_MAX 320
#define T_MIN 352
#define T_INF 384
#define T_BIAS 416
#define T_N128 448
#define T_FAST 480

// HORNER sets p to the polynomial in r that approximates (e^r − 1 − r)/r²
// for |r| ≤ ln2/2 (Cephes expf coefficients, c6 first).
#define HORNER(r, p) \
	VMOVUPS T_C6(R8), p; \
	VFMADD213PS T_C5(R8), r, p; \
	VFMADD213PS T_C4(R8), r, p; \
	VFMADD213PS T_C3(R8), r, p; \
	VFMADD213PS T_C2(R8), r, p; \
	VFMADD213PS T_C1(R8), r, p

// EXPGEN sets Y6 = e^Y0 for any Y0 (Exp's doc comment): x clamped to
// [min, max], n = round(x·log2e) (round to nearest even), r = x − n·ln2,
// e^r by the polynomial, times 2^n; n may reach 128, and 2^128 is not a
// float32, so where n > 127.5 it uses n−1 and 2·e^r; then 0 below min,
// +Inf above max, and NaN where x is NaN. Y0 is kept; Y1-Y5 and Y7 are
// scratch. R8 points at expTab and Y12 holds log2e.
#define EXPGEN \
	VMAXPS T_MIN(R8), Y0, Y1; \
	VMINPS T_MAX(R8), Y1, Y1; \
	VMULPS Y12, Y1, Y2; \
	VROUNDPS $0, Y2, Y2; \
	VMOVAPS Y1, Y3; \
	VFNMADD231PS T_LN2HI(R8), Y2, Y3; \
	VFNMADD231PS T_LN2LO(R8), Y2, Y3; \
	HORNER(Y3, Y4); \
	VMULPS Y3, Y3, Y5; \
	VADDPS T_ONE(R8), Y3, Y6; \
	VFMADD231PS Y5, Y4, Y6; \
	VCMPPS $0x1e, T_N128(R8), Y2, Y7; \
	VANDPS T_ONE(R8), Y7, Y5; \
	VSUBPS Y5, Y2, Y2; \
	VANDPS Y6, Y7, Y5; \
	VADDPS Y5, Y6, Y6; \
	VCVTPS2DQ Y2, Y7; \
	VPADDD T_BIAS(R8), Y7, Y7; \
	VPSLLD $23, Y7, Y7; \
	VMULPS Y7, Y6, Y6; \
	VCMPPS $1, T_MIN(R8), Y0, Y7; \
	VANDNPS Y6, Y7, Y6; \
	VCMPPS $0x1e, T_MAX(R8), Y0, Y7; \
	VBLENDVPS Y7, T_INF(R8), Y6, Y6; \
	VCMPPS $3, Y0, Y0, Y7; \
	VBLENDVPS Y7, Y0, Y6, Y6

// FASTCHECK clears ZF where a lane of Y0 or Y5 is NaN or above 88 (Y1 and
// Y6 scratch): only those need EXPGEN's clamps and blends.
#define FASTCHECK \
	VCMPPS $0x16, T_FAST(R8), Y0, Y1; \
	VCMPPS $0x16, T_FAST(R8), Y5, Y6; \
	VORPS Y6, Y1, Y1; \
	VPTEST Y1, Y1

// EXPFAST2 sets Y2 = e^Y0 and Y7 = e^Y5, two independent chains
// interleaved, for lanes that are not NaN and at most 88: there n ≤ 127
// and every step is EXPGEN's, bit for bit, except that lanes below min
// compute garbage that the last step clears to 0. Y1, Y3, Y4, Y6, Y8 and
// Y11 are scratch; Y12 holds log2e and Y13 min.
#define EXPFAST2 \
	VMULPS Y12, Y0, Y1; \
	VMULPS Y12, Y5, Y6; \
	VROUNDPS $0, Y1, Y1; \
	VROUNDPS $0, Y6, Y6; \
	VMOVAPS Y0, Y2; \
	VMOVAPS Y5, Y7; \
	VFNMADD231PS T_LN2HI(R8), Y1, Y2; \
	VFNMADD231PS T_LN2HI(R8), Y6, Y7; \
	VFNMADD231PS T_LN2LO(R8), Y1, Y2; \
	VFNMADD231PS T_LN2LO(R8), Y6, Y7; \
	HORNER(Y2, Y3); \
	HORNER(Y7, Y8); \
	VMULPS Y2, Y2, Y4; \
	VMULPS Y7, Y7, Y11; \
	VADDPS T_ONE(R8), Y2, Y2; \
	VADDPS T_ONE(R8), Y7, Y7; \
	VFMADD231PS Y4, Y3, Y2; \
	VFMADD231PS Y11, Y8, Y7; \
	VCVTPS2DQ Y1, Y1; \
	VCVTPS2DQ Y6, Y6; \
	VPADDD T_BIAS(R8), Y1, Y1; \
	VPADDD T_BIAS(R8), Y6, Y6; \
	VPSLLD $23, Y1, Y1; \
	VPSLLD $23, Y6, Y6; \
	VMULPS Y1, Y2, Y2; \
	VMULPS Y6, Y7, Y7; \
	VCMPPS $1, Y13, Y0, Y4; \
	VCMPPS $1, Y13, Y5, Y11; \
	VANDNPS Y2, Y4, Y2; \
	VANDNPS Y7, Y11, Y7

// EXPSETUP points R8 at expTab and loads log2e and min into Y12 and Y13.
#define EXPSETUP \
	LEAQ ·expTab(SB), R8; \
	VMOVUPS T_LOG2E(R8), Y12; \
	VMOVUPS T_MIN(R8), Y13

// func expAVX2(p *float32, n int)
// n is a multiple of 8. Pairs of vectors take the fast path unless a lane
// needs EXPGEN; the last odd vector always does.
TEXT ·expAVX2(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), DI
	MOVQ n+8(FP), CX
	SHRQ $3, CX
	JZ   done2
	EXPSETUP
pair2:
	CMPQ CX, $2
	JLT  tail2
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y5
	FASTCHECK
	JNZ  gen2pair
	EXPFAST2
	VMOVUPS Y2, (DI)
	VMOVUPS Y7, 32(DI)
	ADDQ $64, DI
	SUBQ $2, CX
	JMP  pair2
gen2pair:
	MOVQ $2, DX
	JMP  gen2
tail2:
	TESTQ CX, CX
	JZ   done2v
	MOVQ $1, DX
gen2: // DX vectors the general way
	VMOVUPS (DI), Y0
	EXPGEN
	VMOVUPS Y6, (DI)
	ADDQ $32, DI
	DECQ CX
	DECQ DX
	JNZ  gen2
	JMP  pair2
done2v:
	VZEROUPPER
done2:
	RET

// func expSumAVX2(dst, src *float32, n int, scale, shift float32, next *float32) float64
// dst[i] = exp(src[i]*scale - shift), returns the sum in float64; n is a
// multiple of 8. The exponentials are expAVX2's, the sum is WIDEN's two
// accumulators taking the vectors in order. Every 8 elements it prefetches
// the next 32 bytes from next on: n floats from next on arrive in cache.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y14
	VBROADCASTSS shift+28(FP), Y15
	MOVQ next+32(FP), R9
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	SHRQ $3, CX
	JZ   sumdone
	EXPSETUP
sumpair:
	CMPQ CX, $2
	JLT  sumtail
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y5
	VFMSUB213PS Y15, Y14, Y0     // x = src*scale - shift
	VFMSUB213PS Y15, Y14, Y5
	PREFETCHT0 (R9)
	FASTCHECK
	JNZ  sumgenpair
	EXPFAST2
	VMOVUPS Y2, (DI)
	VMOVUPS Y7, 32(DI)
	WIDEN(Y2, X2, Y4, X4, Y9, Y10)
	WIDEN(Y7, X7, Y11, X11, Y9, Y10)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, R9
	SUBQ $2, CX
	JMP  sumpair
sumgenpair:
	MOVQ $2, DX
	JMP  sumgen
sumtail:
	TESTQ CX, CX
	JZ   sumdone
	MOVQ $1, DX
sumgen: // DX vectors the general way
	VMOVUPS (SI), Y0
	VFMSUB213PS Y15, Y14, Y0
	PREFETCHT0 (R9)
	EXPGEN
	VMOVUPS Y6, (DI)
	WIDEN(Y6, X6, Y7, X7, Y9, Y10)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, R9
	DECQ CX
	DECQ DX
	JNZ  sumgen
	JMP  sumpair
sumdone:
	HSUM(Y9, Y10, X9, X10)
	VMOVSD X9, ret+40(FP)
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
