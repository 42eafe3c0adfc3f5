// Package vec holds vectorized elementwise kernels of the CPU backend:
// exp over slices (AVX-512 or AVX2 assembly, chosen at run time, with a
// pure Go fallback), accurate to about 1e-7 relative.
package vec

import "math"

// Exp replaces every element x of v with e^x. Inputs above 88.72 give +Inf
// and below -87.33 give 0 (float32 range); NaN stays NaN.
func Exp(v []float32) {
	n := 0
	if expKernel != nil {
		if n = len(v) / 16 * 16; n > 0 {
			expKernel(v[:n])
		}
	}
	for i := n; i < len(v); i++ {
		v[i] = expf(v[i])
	}
}

// expKernel processes a multiple of 16 elements, or is nil.
var expKernel func(v []float32)

// Polynomial for e^r, |r| <= ln2/2 (Cephes expf coefficients).
const (
	c6 = 1.9875691500e-4
	c5 = 1.3981999507e-3
	c4 = 8.3334519073e-3
	c3 = 4.1665795894e-2
	c2 = 1.6666665459e-1
	c1 = 5.0000001201e-1

	ln2Hi = 0.693359375
	ln2Lo = -2.12194440e-4
	log2e = 1.44269504088896341
	maxX  = 88.72
	minX  = -87.33
)

// expf is the scalar version of the vector kernels.
func expf(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > maxX:
		return float32(math.Inf(1))
	case x < minX:
		return 0
	}
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*ln2Hi - n*ln2Lo
	p := float32(c6)
	p = p*r + c5
	p = p*r + c4
	p = p*r + c3
	p = p*r + c2
	p = p*r + c1
	p = p*r*r + r + 1
	if n > 127 { // 2^128 is not a float32: scale by 2^127 twice over
		p, n = 2*p, 127
	}
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}
